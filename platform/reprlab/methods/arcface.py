"""ArcFace (Deng et al. 2019): softmax over scaled cosines to learnable class centres, with an
additive angular margin on the target class."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.methods.metric_base import (
    ClassVectorArgs,
    LossOutput,
    MetricLearningMethod,
    class_vector_accuracy,
)


def class_cosines(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cosine similarities [N, C] between embeddings [N, D] and class vectors [C, D]."""
    return F.normalize(embeddings, dim=1) @ F.normalize(weight, dim=1).T


def arcface_logits(
    cosines: torch.Tensor, labels: torch.Tensor, scale: float, margin: float
) -> torch.Tensor:
    """s * cos(theta_y + m) for each row's target class y, s * cos(theta_j) elsewhere. The
    target uses cos(t + m) = cos t cos m - sin t sin m (no arccos, whose gradient is infinite
    at +-1) and, as the paper's Algorithm 1, no fallback once theta_y + m passes pi."""
    target = cosines.gather(1, labels.unsqueeze(1))
    sine = (1 - target.pow(2)).clamp(min=torch.finfo(cosines.dtype).tiny).sqrt()
    shifted = target * math.cos(margin) - sine * math.sin(margin)
    return scale * cosines.scatter(1, labels.unsqueeze(1), shifted)


def arcface_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    scale: float = 64.0,
    margin: float = 0.5,
) -> LossOutput:
    """Mean cross-entropy of the ArcFace logits against `labels` in 0..C-1 (`weight` [C, D]).
    Metric: `train_acc`, how often the nearest class centre (no margin) is the label."""
    cosines = class_cosines(embeddings, weight)
    loss = F.cross_entropy(arcface_logits(cosines, labels, scale, margin), labels)
    return LossOutput(loss, {"train_acc": class_vector_accuracy(cosines, labels)})


class ArcFaceArgs(ClassVectorArgs):
    scale: float = Field(64.0, gt=0, description="feature scale s")
    margin: float = Field(0.5, ge=0, lt=math.pi, description="additive angular margin m (rad)")


class ArcFace(MetricLearningMethod):
    """Embedding head and one learnable centre per training class, trained with the additive
    angular margin loss; labels must index the classes 0..num_classes-1."""

    Args = ArcFaceArgs

    def __init__(self, backbone: nn.Module, args: ArcFaceArgs) -> None:
        super().__init__(backbone, args)
        # N(0, 0.01) as the authors' insightface code initialises the class centres.
        self.class_centres = nn.Parameter(torch.randn(args.num_classes, args.embedding_dim) * 0.01)

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        args = self.args
        return arcface_loss(embeddings, labels, self.class_centres, args.scale, args.margin)
