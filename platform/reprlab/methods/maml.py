"""MAML (Finn et al. 2017): meta-learn an initialisation from which a few SGD steps on a task's
support set classify its query set; the meta-gradient differentiates through those steps."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.func import functional_call

from reprlab.methods.base import EpisodicMethod, MethodArgs


class MAMLArgs(MethodArgs):
    ways: int = Field(5, ge=2, description="head outputs; must equal the episodes' N")
    inner_lr: float = Field(0.4, gt=0, description="SGD step size alpha of the inner loop")
    inner_steps: int = Field(1, ge=1, description="inner SGD steps in training")
    test_inner_steps: int = Field(3, ge=1, description="inner SGD steps in evaluation")
    first_order: bool = Field(
        False, description="FOMAML: treat the inner gradients as constants (no second order)"
    )


def batch_statistics_only(module: nn.Module) -> None:
    """Make every BatchNorm layer of `module` normalise by the current batch's statistics, in
    train and eval mode alike (no running statistics); its affine weights stay parameters."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.track_running_stats = False
            layer.running_mean = layer.running_var = layer.num_batches_tracked = None


def weights_within(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `weights` named `prefix.*`, renamed relative to that submodule."""
    start = prefix + "."
    return {name[len(start) :]: w for name, w in weights.items() if name.startswith(start)}


def _tasks(batch: dict[str, torch.Tensor]) -> Iterator[tuple[torch.Tensor, ...]]:
    """(support, support_label, query, query_label) of each task of an episode batch."""
    keys = ("support", "support_label", "query", "query_label")
    return zip(*(batch[key] for key in keys), strict=True)


class MAML(EpisodicMethod):
    """Backbone plus a `ways`-output linear head, adapted per task by `inner_steps` SGD steps
    on the support cross-entropy; the loss is the query cross-entropy of the adapted network.

    Batch norm is transductive, as in the paper's reference code: it always normalises by the
    current forward pass's own statistics (the support set during adaptation, the query set for
    the query loss, in training and evaluation alike), with no running statistics; its affine
    weights are meta-learned. Subclasses choose what adapts by overriding `inner_parameters`,
    `task_features` and `task_logits` (ANIL: the head only)."""

    Args = MAMLArgs
    ddp = False

    def __init__(self, backbone: nn.Module, args: MAMLArgs) -> None:
        super().__init__(backbone, args)
        batch_statistics_only(backbone)
        self.head = nn.Linear(backbone.num_features, args.ways)

    def inner_parameters(self) -> dict[str, torch.Tensor]:
        """The parameters the inner loop adapts, named as in `self`: all trainable ones."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def task_features(self, images: torch.Tensor) -> torch.Tensor:
        """The part of the network the inner loop leaves fixed, run once per set: none."""
        return images

    def task_logits(self, inputs: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of `task_features` outputs with `weights` in place of the parameters
        of the same names."""
        features = functional_call(self.backbone, weights_within(weights, "backbone"), (inputs,))
        return functional_call(self.head, weights_within(weights, "head"), (features,))

    def adapt(
        self, support: torch.Tensor, labels: torch.Tensor, steps: int, first_order: bool
    ) -> dict[str, torch.Tensor]:
        """Fast weights after `steps` SGD steps of size inner_lr on the support cross-entropy,
        differentiable with respect to the initial parameters (to first order only if
        `first_order`: the inner gradients are then constants)."""
        weights = self.inner_parameters()
        for _ in range(steps):
            loss = F.cross_entropy(self.task_logits(support, weights), labels)
            grads = torch.autograd.grad(loss, list(weights.values()), create_graph=not first_order)
            weights = {
                name: w - self.args.inner_lr * g
                for (name, w), g in zip(weights.items(), grads, strict=True)
            }
        return weights

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses, accuracies = [], []
        for support, support_label, query, query_label in _tasks(batch):
            weights = self.adapt(
                self.task_features(support),
                support_label,
                self.args.inner_steps,
                self.args.first_order,
            )
            logits = self.task_logits(self.task_features(query), weights)
            losses.append(F.cross_entropy(logits, query_label))
            accuracies.append((logits.argmax(1) == query_label).float().mean())
        return {
            "loss": torch.stack(losses).mean(),
            "query_acc": torch.stack(accuracies).mean().detach(),
        }

    def episode_accuracy(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Query accuracy of each task after `test_inner_steps` first-order inner steps; each
        support graph is freed by autograd.grad, which writes no `.grad`."""
        accuracies = []
        for support, support_label, query, query_label in _tasks(batch):
            with torch.no_grad():
                support, query = self.task_features(support), self.task_features(query)
            weights = self.adapt(support, support_label, self.args.test_inner_steps, True)
            with torch.no_grad():
                logits = self.task_logits(query, weights)
            accuracies.append((logits.argmax(1) == query_label).float().mean())
        return torch.stack(accuracies)
