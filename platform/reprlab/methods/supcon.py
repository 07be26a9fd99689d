"""Supervised contrastive learning (Khosla et al. 2020, L_out): NT-Xent in which every other
image of the anchor's class is a positive."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from reprlab.methods.metric_base import (
    LossOutput,
    MetricArgs,
    MetricLearningMethod,
    pair_masks,
)


def supcon_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1
) -> LossOutput:
    """For each anchor i, -1/|P(i)| sum_{p in P(i)} log(exp(z_i.z_p/t) / sum_{a != i}
    exp(z_i.z_a/t)) on normalised z, P(i) the other rows of i's class; mean over anchors with
    a positive. One view per image, so positives are other images of the class (the authors'
    code also rescales by t / 0.07, which the paper's Eq. 2 does not)."""
    normalised = F.normalize(embeddings, dim=1)
    logits = normalised @ normalised.T / temperature
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    log_prob = logits.masked_fill(eye, float("-inf")).log_softmax(dim=1)
    positive, _ = pair_masks(labels)
    counts = positive.sum(1)
    per_anchor = -log_prob.masked_fill(~positive, 0).sum(1) / counts.clamp(min=1)
    return LossOutput(per_anchor.sum() / (counts > 0).sum().clamp(min=1), {})


class SupConArgs(MetricArgs):
    temperature: float = Field(0.1, gt=0, description="softmax temperature tau")


class SupCon(MetricLearningMethod):
    """Embedding head trained with the supervised contrastive loss over the global batch."""

    Args = SupConArgs

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        return supcon_loss(embeddings, labels, self.args.temperature)
