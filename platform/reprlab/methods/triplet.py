"""Triplet margin loss with online mining: all, hard and semi-hard triplets (FaceNet, Schroff
et al. 2015) or the batch-hard triplet of every anchor (Hermans et al. 2017)."""

from __future__ import annotations

from typing import Literal

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

Mining = Literal["all", "hard", "semihard", "batch_hard"]


def mine_triplets(
    distances: torch.Tensor, labels: torch.Tensor, margin: float, mining: Mining
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchor, positive, negative) index tensors of the triplets `mining` keeps, given the
    [N, N] distance matrix. "all": every (a, p, n) with y_p = y_a, p != a, y_n != y_a; "hard":
    those with d(a,n) < d(a,p); "semihard": d(a,p) < d(a,n) < d(a,p) + margin; "batch_hard":
    per anchor with a positive and a negative, its farthest positive and closest negative.
    The first three build a [positive pairs, N] mask (m - 1 times N^2 for m-per-class
    batches, not N^3)."""
    positive, negative = pair_masks(labels)
    if mining == "batch_hard":
        anchors = (positive.any(1) & negative.any(1)).nonzero().squeeze(1)
        farthest = distances.masked_fill(~positive, float("-inf")).argmax(1)
        closest = distances.masked_fill(~negative, float("inf")).argmin(1)
        return anchors, farthest[anchors], closest[anchors]
    pair_anchors, pair_positives = positive.nonzero(as_tuple=True)
    keep = negative[pair_anchors]
    to_positive = distances[pair_anchors, pair_positives].unsqueeze(1)
    to_negative = distances[pair_anchors]
    if mining == "hard":
        keep &= to_negative < to_positive
    elif mining == "semihard":
        keep &= (to_positive < to_negative) & (to_negative < to_positive + margin)
    pairs, negatives = keep.nonzero(as_tuple=True)
    return pair_anchors[pairs], pair_positives[pairs], negatives


def triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.2,
    mining: Mining = "semihard",
) -> LossOutput:
    """relu(d(a,p) - d(a,n) + margin) on the mined triplets, d the Euclidean distance of the
    normalised embeddings: mean over the triplets with positive loss ("all", "hard",
    "semihard"), or over the anchors ("batch_hard"). Metric: `active_triplets`, the fraction of
    candidates (valid triplets; anchors for "batch_hard") that contribute a non-zero loss."""
    distances = pairwise_distances(F.normalize(embeddings, dim=1))
    anchors, positives, negatives = mine_triplets(distances, labels, margin, mining)
    terms = F.relu(distances[anchors, positives] - distances[anchors, negatives] + margin)
    positive, negative = pair_masks(labels)
    if mining == "batch_hard":
        loss = terms.sum() / max(len(terms), 1)
        candidates = (positive.any(1) & negative.any(1)).sum()
    else:
        loss = nonzero_mean(terms)
        candidates = (positive.sum(1) * negative.sum(1)).sum()
    return LossOutput(loss, {"active_triplets": fraction((terms > 0).sum(), candidates)})


class TripletArgs(MetricArgs):
    margin: float = Field(0.2, ge=0, description="FaceNet's alpha, on normalised embeddings")
    mining: Mining = "semihard"


class Triplet(MetricLearningMethod):
    """Embedding head trained with the triplet margin loss on triplets mined in the global
    batch."""

    Args = TripletArgs

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        return triplet_loss(embeddings, labels, self.args.margin, self.args.mining)
