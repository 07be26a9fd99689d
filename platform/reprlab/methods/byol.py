"""BYOL (Grill et al. 2020): an online network with a predictor regresses the projections an
exponential-moving-average target network gives of the other view; no negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.methods.momentum import MomentumArgs, MomentumMethod
from reprlab.models.heads import mlp_head


def normalized_mse_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z); the target carries no
    gradient."""
    prediction = F.normalize(prediction, dim=1)
    target = F.normalize(target.detach(), dim=1)
    return (2 - 2 * (prediction * target).sum(dim=1)).mean()


class BYOLArgs(MomentumArgs):
    base_momentum: float = Field(0.996, gt=0, lt=1, description="tau_base, cosine to 1")
    proj_hidden_dim: int = Field(4096, gt=0)
    proj_dim: int = Field(256, gt=0)
    proj_layers: int = Field(2, ge=1)
    pred_hidden_dim: int = Field(4096, gt=0)


class BYOL(MomentumMethod):
    """Symmetric loss: each view's online prediction against the other view's target
    projection. The target decay rate follows tau = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2."""

    Args = BYOLArgs

    def __init__(self, backbone: nn.Module, args: BYOLArgs) -> None:
        super().__init__(backbone, args)
        self.predictor = mlp_head(args.proj_dim, args.pred_hidden_dim, args.proj_dim, 2)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features, z1, z2 = self.project_views(batch)
        p1, p2 = self.predictor(z1).float(), self.predictor(z2).float()
        t1, t2 = self.target_views(batch)
        loss = normalized_mse_loss(p1, t2) + normalized_mse_loss(p2, t1)
        return {"loss": loss, "momentum": torch.tensor(self.momentum), "features": features}
