"""Deep metric learning: a backbone, a linear embedding head and a loss over the labelled
embeddings of the global m-per-class batch, plus the pair arithmetic the losses share."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.distributed import gather_no_grad, gather_with_grad
from reprlab.methods.base import Method, MethodArgs


class MetricArgs(MethodArgs):
    embedding_dim: int = Field(128, gt=0, description="width of the embedding the loss sees")


class ClassVectorArgs(MetricArgs):
    """Args of a loss with one learnable vector per training class (ArcFace, Proxy Anchor)."""

    num_classes: int = Field(
        gt=0, description="training classes (required; labels lie in 0..num_classes-1)"
    )


class LossOutput(NamedTuple):
    """A metric-learning loss and its detached scalar diagnostics, logged as training metrics."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


LossFn = Callable[[torch.Tensor, torch.Tensor], LossOutput]


def global_batch_loss(
    loss_fn: LossFn, local_embeddings: torch.Tensor, local_labels: torch.Tensor
) -> LossOutput:
    """`loss_fn` on the embeddings (gathered with gradients) and labels of every worker, so
    mining sees the whole global batch and every worker computes the same loss. Each worker's
    rows then receive world_size times the global gradient (the gather sums the identical
    backward of every worker), which DDP's mean over workers turns back into exactly the
    single-process gradient of the global-batch loss, for the encoder and class vectors alike."""
    return loss_fn(gather_with_grad(local_embeddings), gather_no_grad(local_labels))


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean [N, N] masks of positive pairs (same label, i != j) and negative pairs."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [N, N] between the rows of `x`; the square is clamped at the
    smallest normal float before the root, so coincident rows (the diagonal) give a finite,
    zero gradient instead of NaN."""
    squared = x.pow(2).sum(1)
    squared = squared.unsqueeze(0) + squared.unsqueeze(1) - 2 * x @ x.T
    return squared.clamp(min=torch.finfo(x.dtype).tiny).sqrt()


def log1p_sum_exp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log(1 + sum_j exp(x_ij)) over the entries `mask` keeps, per row, computed stably (the 1
    is a zero logit); a row with none gives 0."""
    logits = F.pad(x.masked_fill(~mask, float("-inf")), (1, 0))
    return torch.logsumexp(logits, dim=1)


def nonzero_mean(terms: torch.Tensor) -> torch.Tensor:
    """Mean over the positive entries of `terms` (PML's AvgNonZeroReducer); 0, still part of
    the graph, when there are none."""
    return terms.sum() / (terms > 0).sum().clamp(min=1)


def fraction(count: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """count / total as a detached float metric, 0 when total is 0."""
    return (count / total.clamp(min=1)).detach().float()


def class_vector_accuracy(cosines: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose most similar class vector is their own class (detached)."""
    return (cosines.argmax(1) == labels).float().mean().detach()


class MetricLearningMethod(Method):
    """Backbone, a linear embedding head and `loss` on the embeddings of `view1`. A batch is one
    worker's even share of an m-per-class global batch: `view1` float [B,C,H,W] in [0, 1] and
    `label` int64 [B]. The loss is computed over the global batch on every worker (see
    `global_batch_loss`); evaluation uses the backbone features (`embed`)."""

    Args = MetricArgs
    batch_source = "m_per_class"

    def __init__(self, backbone: nn.Module, args: MetricArgs) -> None:
        super().__init__(backbone, args)
        self.embedding_head = nn.Linear(backbone.num_features, args.embedding_dim)

    def projection_head(self) -> nn.Module:
        return self.embedding_head

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        """The objective on the global batch's embeddings [N, D] and labels [N]."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = self.backbone(batch["view1"])
        embeddings = self.embedding_head(features).float()
        # In fp32 even under the loop's bf16 autocast: mining and margins compare distances
        # that bf16's 8-bit mantissa would round together.
        with torch.autocast(embeddings.device.type, enabled=False):
            loss, metrics = global_batch_loss(self.loss, embeddings, batch["label"].long())
        return {"loss": loss, "features": features.detach(), **metrics}
