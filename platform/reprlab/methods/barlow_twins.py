"""Barlow Twins (Zbontar et al. 2021): make the cross-correlation of two views' embeddings,
computed over the global batch, close to the identity."""

from __future__ import annotations

import torch
from pydantic import Field

from reprlab.distributed import gather_with_grad
from reprlab.methods.base import ProjectionArgs, TwoViewMethod


def _standardize(z: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit (biased) standard deviation per dimension over the batch."""
    return (z - z.mean(dim=0)) / z.std(dim=0, unbiased=False)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3) -> torch.Tensor:
    """sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2, with C the cross-correlation of the
    batch-standardised embeddings over the global batch (gathered from every worker, with
    gradients, so every worker computes the same global loss)."""
    z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    c = _standardize(z1).T @ _standardize(z2) / z1.shape[0]
    on_diagonal = (1 - torch.diagonal(c)).pow(2).sum()
    off_diagonal = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diagonal + lambd * off_diagonal


class BarlowTwinsArgs(ProjectionArgs):
    lambd: float = Field(5e-3, gt=0, description="weight of the off-diagonal (redundancy) term")


class BarlowTwins(TwoViewMethod):
    """Encoder, a 3-layer projector, and the redundancy-reduction loss between two views."""

    Args = BarlowTwinsArgs

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features, z1, z2 = self.project_views(batch)
        return {"loss": barlow_twins_loss(z1, z2, self.args.lambd), "features": features}
