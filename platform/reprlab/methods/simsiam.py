"""SimSiam (Chen & He 2021): a predictor and a stop-gradient on the other branch are enough to
avoid collapse; no negatives, no momentum encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.methods.base import ProjectionArgs, TwoViewMethod
from reprlab.models.heads import mlp_head


def negative_cosine_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -cos(p, stopgrad(z)), averaged over the batch."""
    return -F.cosine_similarity(prediction, target.detach(), dim=1).mean()


class SimSiamArgs(ProjectionArgs):
    proj_hidden_dim: int = Field(2048, gt=0)
    proj_dim: int = Field(2048, gt=0)
    proj_layers: int = Field(3, ge=1)
    proj_last_bn: bool = True
    pred_hidden_dim: int = Field(512, gt=0, description="the predictor's bottleneck")


class SimSiam(TwoViewMethod):
    """L = D(p1, z2)/2 + D(p2, z1)/2 with p = predictor(z)."""

    Args = SimSiamArgs

    def __init__(self, backbone: nn.Module, args: SimSiamArgs) -> None:
        super().__init__(backbone, args)
        self.predictor = mlp_head(args.proj_dim, args.pred_hidden_dim, args.proj_dim, 2)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features, z1, z2 = self.project_views(batch)
        p1, p2 = self.predictor(z1).float(), self.predictor(z2).float()
        loss = (negative_cosine_loss(p1, z2) + negative_cosine_loss(p2, z1)) / 2
        return {"loss": loss, "features": features}
