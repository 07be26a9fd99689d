"""FixMatch (Sohn et al. 2020): cross-entropy on the labelled images plus, on the unlabelled
ones, cross-entropy of the strong view against the weak view's confident pseudo-label; an
exponential moving average of the weights is what is evaluated."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.methods.base import MethodArgs
from reprlab.methods.ema_classifier import EMAClassifier


def fixmatch_unlabelled_loss(
    weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over all rows of 1[max q >= threshold] * CE(strong, argmax q), the fraction of rows
    kept), q = softmax(weak): the pseudo-labels carry no gradient."""
    confidence, pseudo_labels = weak_logits.detach().softmax(dim=1).max(dim=1)
    mask = (confidence >= threshold).to(strong_logits.dtype)
    per_row = F.cross_entropy(strong_logits, pseudo_labels, reduction="none")
    return (mask * per_row).mean(), mask.mean()


class FixMatchArgs(MethodArgs):
    num_classes: int = Field(10, ge=2)
    threshold: float = Field(0.95, gt=0, le=1, description="confidence tau a pseudo-label needs")
    unlabelled_weight: float = Field(
        1.0, ge=0, description="lambda_u, weight of the unlabelled loss"
    )
    ema_decay: float = Field(0.999, ge=0, lt=1, description="decay of the evaluated EMA weights")


class FixMatch(EMAClassifier):
    """Encoder plus a linear classifier, trained in one pass over the labelled and both
    unlabelled views so BatchNorm sees them all, as in the paper.

    A batch holds `labelled` float [B,C,H,W] in [0, 1] (weak view) with `label` int64 [B]
    (all >= 0), and `unlabelled_weak`, `unlabelled_strong` float [muB,C,H,W]: row i of both is
    the same unlabelled image. No other key is read (the unlabelled images have no labels).

    `embed` and `classify` use the EMA copy of backbone and classifier, always in eval mode."""

    Args = FixMatchArgs

    def __init__(self, backbone: nn.Module, args: FixMatchArgs) -> None:
        super().__init__(backbone, args, num_classes=args.num_classes, with_ema=True)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labelled, weak, strong = (
            batch["labelled"],
            batch["unlabelled_weak"],
            batch["unlabelled_strong"],
        )
        features = self.backbone(torch.cat([labelled, weak, strong]))
        logits = self.classifier(features).float()
        rows = labelled.shape[0]
        labelled_logits, weak_logits, strong_logits = logits.split(
            [rows, weak.shape[0], strong.shape[0]]
        )
        labels = batch["label"].long()
        labelled_loss = F.cross_entropy(labelled_logits, labels)
        unlabelled_loss, mask_rate = fixmatch_unlabelled_loss(
            weak_logits, strong_logits, self.args.threshold
        )
        accuracy = (labelled_logits.argmax(1) == labels).float().mean()
        return {
            "loss": labelled_loss + self.args.unlabelled_weight * unlabelled_loss,
            "labelled_loss": labelled_loss.detach(),
            "unlabelled_loss": unlabelled_loss.detach(),
            "mask_rate": mask_rate,
            "train_acc": accuracy.detach(),
            "features": features[:rows].detach(),
        }

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.update_ema(self.args.ema_decay)
