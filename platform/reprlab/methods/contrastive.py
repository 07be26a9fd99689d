"""Contrastive loss (Hadsell, Chopra and LeCun 2006): pull same-class pairs together, push
other pairs beyond a margin, on L2-normalised embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from reprlab.methods.metric_base import (
    LossOutput,
    MetricArgs,
    MetricLearningMethod,
    fraction,
    nonzero_mean,
    pair_masks,
    pairwise_distances,
)


def contrastive_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
) -> LossOutput:
    """relu(d - pos_margin)^2 over positive pairs plus relu(neg_margin - d)^2 over negative
    pairs, d the Euclidean distance of the normalised embeddings (squared as in Hadsell et al.;
    pytorch-metric-learning's default leaves them unsquared). Each part is averaged over its
    active (non-zero) pairs, as PML's AvgNonZeroReducer does, so the many satisfied negatives
    of a large batch do not dilute the gradient. Metric: `active_pairs`, the fraction of all
    pairs with non-zero loss."""
    distances = pairwise_distances(F.normalize(embeddings, dim=1))
    positive, negative = pair_masks(labels)
    pos_terms = F.relu(distances[positive] - pos_margin).pow(2)
    neg_terms = F.relu(neg_margin - distances[negative]).pow(2)
    loss = nonzero_mean(pos_terms) + nonzero_mean(neg_terms)
    active = (pos_terms > 0).sum() + (neg_terms > 0).sum()
    return LossOutput(loss, {"active_pairs": fraction(active, positive.sum() + negative.sum())})


class ContrastiveArgs(MetricArgs):
    pos_margin: float = Field(0.0, ge=0, description="distance below which positives are free")
    neg_margin: float = Field(1.0, gt=0, description="distance beyond which negatives are free")


class Contrastive(MetricLearningMethod):
    """Embedding head trained with the margin contrastive loss over all global-batch pairs."""

    Args = ContrastiveArgs

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        return contrastive_loss(embeddings, labels, self.args.pos_margin, self.args.neg_margin)
