"""Multi-Similarity loss with its pair miner (Wang et al. 2019): mine informative pairs by
relative similarity, then weight them by self- and relative similarity through soft-plus
terms on cosine similarities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from reprlab.methods.metric_base import (
    LossOutput,
    MetricArgs,
    MetricLearningMethod,
    fraction,
    log1p_sum_exp,
    pair_masks,
)


def mine_pairs(
    similarities: torch.Tensor, labels: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean [N, N] masks of the kept positive and negative pairs (Eq. 7-8 of the paper): a
    negative n of anchor a when S_an > min_p S_ap - epsilon, a positive p when
    S_ap < max_n S_an + epsilon (extremes over all of a's positives / negatives)."""
    positive, negative = pair_masks(labels)
    hardest_positive = similarities.masked_fill(~positive, float("inf")).amin(1, keepdim=True)
    hardest_negative = similarities.masked_fill(~negative, float("-inf")).amax(1, keepdim=True)
    kept_negative = negative & (similarities > hardest_positive - epsilon)
    kept_positive = positive & (similarities < hardest_negative + epsilon)
    return kept_positive, kept_negative


def multi_similarity_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 1.0,
    epsilon: float = 0.1,
) -> LossOutput:
    """Mean over all anchors of (1/alpha) log(1 + sum_P exp(-alpha (S_ap - base))) +
    (1/beta) log(1 + sum_N exp(beta (S_an - base))) over the mined pairs (Eq. 6; an empty set
    adds 0), S the cosine similarity. The official code instead skips anchors lacking a mined
    positive or negative. Metric: `mined_pairs`, the fraction of all pairs the miner keeps."""
    normalised = F.normalize(embeddings, dim=1)
    similarities = normalised @ normalised.T
    kept_positive, kept_negative = mine_pairs(similarities, labels, epsilon)
    shifted = similarities - base
    per_anchor = log1p_sum_exp(-alpha * shifted, kept_positive) / alpha
    per_anchor = per_anchor + log1p_sum_exp(beta * shifted, kept_negative) / beta
    positive, negative = pair_masks(labels)
    kept = kept_positive.sum() + kept_negative.sum()
    mined = fraction(kept, positive.sum() + negative.sum())
    return LossOutput(per_anchor.mean(), {"mined_pairs": mined})


class MultiSimilarityArgs(MetricArgs):
    # Sec. 5.1 of Wang et al. 2019: alpha = 2, beta = 50, lambda = 1, epsilon = 0.1. The
    # authors' code and pytorch-metric-learning default to lambda (`base`) = 0.5.
    alpha: float = Field(2.0, gt=0, description="scale of the positive term")
    beta: float = Field(50.0, gt=0, description="scale of the negative term")
    base: float = Field(1.0, description="similarity margin lambda")
    epsilon: float = Field(0.1, ge=0, description="margin of the pair miner")


class MultiSimilarity(MetricLearningMethod):
    """Embedding head trained with the MS loss on pairs mined in the global batch."""

    Args = MultiSimilarityArgs

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        args = self.args
        return multi_similarity_loss(
            embeddings, labels, args.alpha, args.beta, args.base, args.epsilon
        )
