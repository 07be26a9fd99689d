"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms between two views'
embeddings, the latter two over the global batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from reprlab.distributed import gather_with_grad
from reprlab.methods.base import ProjectionArgs, TwoViewMethod


def _variance_term(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Mean hinge on the per-dimension standard deviation: relu(1 - sqrt(var + eps))."""
    return F.relu(1 - torch.sqrt(z.var(dim=0) + eps)).mean()


def _covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances, divided by the dimension."""
    centered = z - z.mean(dim=0)
    cov = centered.T @ centered / (z.shape[0] - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / z.shape[1]


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
) -> torch.Tensor:
    """sim * MSE(z1, z2) + std * (v(z1) + v(z2)) / 2 + cov * (c(z1) + c(z2)), every term over
    the global batch (gathered from every worker, with gradients)."""
    z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    invariance = F.mse_loss(z1, z2)
    variance = (_variance_term(z1) + _variance_term(z2)) / 2
    covariance = _covariance_term(z1) + _covariance_term(z2)
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


class VICRegArgs(ProjectionArgs):
    sim_coeff: float = Field(25.0, ge=0)
    std_coeff: float = Field(25.0, ge=0)
    cov_coeff: float = Field(1.0, ge=0)


class VICReg(TwoViewMethod):
    """Encoder, a 3-layer expander, and the variance-invariance-covariance loss."""

    Args = VICRegArgs

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features, z1, z2 = self.project_views(batch)
        args = self.args
        loss = vicreg_loss(z1, z2, args.sim_coeff, args.std_coeff, args.cov_coeff)
        return {"loss": loss, "features": features}
