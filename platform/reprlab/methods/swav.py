"""SwAV (Caron et al. 2020): swapping assignments between views. Each view's projection gets
soft codes over learnable prototypes, equipartitioned over the global batch by Sinkhorn-Knopp;
the other view's projection predicts them."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.distributed import summed_over_workers, world_info
from reprlab.methods.base import ProjectionArgs, TwoViewMethod
from reprlab.methods.collapse import CollapseMonitor
from reprlab.methods.moco_v2 import KeyQueue


@torch.no_grad()
def sinkhorn(
    scores: torch.Tensor,
    epsilon: float,
    iterations: int,
    shared: torch.Tensor | None = None,
) -> torch.Tensor:
    """Codes [B, K] of this worker's prototype `scores` [B, K]: Q = exp(scores / epsilon)
    scaled alternately so that each prototype's row sums to 1/K and each sample's column to
    1/B over the global batch, then columns multiplied by B to sum to 1 (the authors'
    distributed_sinkhorn: row sums and totals are summed over the workers). `shared` [S, K],
    scores of queued projections identical on every worker, join the columns once, not once
    per worker, and get no codes."""
    shared = scores.new_zeros(0, scores.shape[1]) if shared is None else shared
    local, queued = torch.exp(scores.T / epsilon), torch.exp(shared.T / epsilon)
    prototypes = local.shape[0]
    columns = summed_over_workers(local.new_tensor(float(local.shape[1]))) + queued.shape[1]
    total = summed_over_workers(local.sum()) + queued.sum()
    local, queued = local / total, queued / total
    for _ in range(iterations):
        rows = summed_over_workers(local.sum(1, keepdim=True)) + queued.sum(1, keepdim=True)
        local, queued = local / (rows * prototypes), queued / (rows * prototypes)
        local = local / (local.sum(0, keepdim=True) * columns)
        queued = queued / (queued.sum(0, keepdim=True) * columns)
    return (local * columns).T


def swapped_prediction_loss(
    scores1: torch.Tensor,
    scores2: torch.Tensor,
    codes1: torch.Tensor,
    codes2: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """(l(codes2, scores1) + l(codes1, scores2)) / 2 with l(q, s) the batch mean of
    -sum_k q_k log softmax(s / temperature)_k: each view predicts the other's codes."""

    def predict(codes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return -(codes * F.log_softmax(scores / temperature, dim=1)).sum(1).mean()

    return (predict(codes2, scores1) + predict(codes1, scores2)) / 2


class _ZeroGradient(torch.autograd.Function):
    """Identity whose gradient is zero: frozen prototypes stay in the graph, since DDP wants a
    gradient for every trainable parameter (a detached weight fails its next step)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(grad)


@torch.no_grad()
def prototypes_in_use(scores: torch.Tensor) -> int:
    """How many prototypes are the best match of at least one row of the global batch's
    `scores` [B, K] (this worker's rows; the count is over every worker's)."""
    used = scores.new_zeros(scores.shape[1]).index_fill_(0, scores.argmax(1), 1)
    return int((summed_over_workers(used) > 0).sum())


@torch.no_grad()
def mean_entropy(codes: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the rows of `codes` [B, K]: log K when the codes are uniform, as
    the Sinkhorn makes them for identical projections."""
    return -torch.special.xlogy(codes, codes).sum(1).mean()


class SwAVArgs(ProjectionArgs):
    proj_hidden_dim: int = Field(2048, gt=0)
    proj_dim: int = Field(128, gt=0)
    proj_layers: int = Field(2, ge=1)
    num_prototypes: int = Field(300, gt=0, description="K (3000 in the paper, for ImageNet)")
    temperature: float = Field(0.1, gt=0, description="softmax temperature of the prediction")
    epsilon: float = Field(0.05, gt=0, description="Sinkhorn entropy regularisation")
    sinkhorn_iterations: int = Field(3, ge=1)
    freeze_prototypes_steps: int = Field(313, ge=0, description="first steps they do not move")
    queue_length: int = Field(
        0, ge=0, description="past projections per view the Sinkhorn also spreads; 0: none"
    )
    queue_start_steps: int = Field(0, ge=0, description="steps before a full queue is used")
    collapse_prototypes: int = Field(1, ge=1, description="collapse at this many in use or fewer")
    collapse_patience: int = Field(100, ge=0, description="steps collapsed; 0: no check")
    collapse_grace_steps: int = Field(200, ge=0, description="first steps never checked")


class SwAV(TwoViewMethod):
    """Backbone, MLP projector to L2-normalised z, prototypes C (rows renormalised before
    every step); loss: each view's softmax(z^T C / temperature) predicts the other view's
    Sinkhorn codes. With `queue_length`, the last projections of the global batch (one queue
    per view) join the Sinkhorn once full and past `queue_start_steps`, so that a batch
    smaller than the number of prototypes can still spread over them.

    For the first `freeze_prototypes_steps` the prototypes get a zero gradient, set in the
    forward since `on_step_end` comes after the optimiser step; weight decay then only rescales
    them, which the renormalisation before the next step undoes."""

    Args = SwAVArgs

    def __init__(self, backbone: nn.Module, args: SwAVArgs) -> None:
        super().__init__(backbone, args)
        self.prototypes = nn.Linear(args.proj_dim, args.num_prototypes, bias=False)
        self.queues = nn.ModuleList(
            [KeyQueue(args.queue_length, args.proj_dim) for _ in range(2)]
            if args.queue_length
            else []
        )
        self.register_buffer("queued", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.monitor: CollapseMonitor | None = None
        if args.collapse_patience:
            self.monitor = CollapseMonitor(
                "swav",
                "prototypes in use",
                args.collapse_prototypes,
                args.collapse_patience,
                args.collapse_grace_steps,
                advice="one prototype takes every image: set queue_length when the global "
                "batch is smaller than num_prototypes, lower epsilon or freeze the prototypes "
                "for longer",
            )

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        features, z1, z2 = self.project_views(batch)
        embeddings = [F.normalize(z1, dim=1), F.normalize(z2, dim=1)]
        prototypes = self.prototypes.weight.float()
        if self.steps_done < self.args.freeze_prototypes_steps:
            prototypes = _ZeroGradient.apply(prototypes)
        args = self.args
        with torch.autocast(z1.device.type, enabled=False):  # fp32: exp(scores / epsilon)
            scores = [z @ prototypes.T for z in embeddings]
            codes = [
                sinkhorn(view_scores, args.epsilon, args.sinkhorn_iterations, self.queue_scores(i))
                for i, view_scores in enumerate(scores)
            ]
        loss = swapped_prediction_loss(*scores, *codes, args.temperature)
        self.enqueue(embeddings)
        in_use = prototypes_in_use(torch.cat(scores))
        if self.monitor is not None:
            self.monitor.update(in_use)
        return {
            "loss": loss,
            "prototype_usage": loss.new_tensor(in_use / args.num_prototypes),
            "code_entropy": mean_entropy(torch.cat(codes)),
            "features": features,
        }

    @torch.no_grad()
    def queue_scores(self, view: int) -> torch.Tensor | None:
        """Scores of view `view`'s queued projections against the current prototypes, once
        the queue is full and its start step has passed; None before."""
        args = self.args
        if not self.queues or self.queued < args.queue_length:
            return None
        if self.steps_done < args.queue_start_steps:
            return None
        return (self.queues[view].keys @ self.prototypes.weight.T).float()

    @torch.no_grad()
    def enqueue(self, embeddings: list[torch.Tensor]) -> None:
        """Push each view's projections of the global batch onto its queue."""
        if not self.queues:
            return
        for queue, z in zip(self.queues, embeddings, strict=True):
            queue.enqueue(z.detach())
        self.queued.add_(len(embeddings[0]) * world_info()[1]).clamp_(max=self.args.queue_length)

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.steps_done.fill_(step + 1)
