"""SimCLR (Chen et al. 2020): two augmented views, a projection head, NT-Xent over the global
batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from reprlab.distributed import gather_with_grad, world_info
from reprlab.methods.base import ProjectionArgs, TwoViewMethod


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross-entropy of the SimCLR paper for this worker's anchors.

    Each of the 2N local anchors (both views, both directions) is scored by cosine similarity
    against every other embedding of the global batch (gathered from all workers with
    gradients), its own similarity excluded: one positive (its other view) and 2M-2 negatives
    for a global batch of M images. Returns the mean over local anchors; averaged over equally
    sized workers it is exactly the global-batch loss."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    rank, _ = world_info()
    all1, all2 = gather_with_grad(z1), gather_with_grad(z2)
    m = all1.shape[0]
    anchors = torch.cat([z1, z2])
    candidates = torch.cat([all1, all2])
    logits = anchors @ candidates.T / temperature
    local = torch.arange(n, device=z1.device) + rank * n
    self_index = torch.cat([local, local + m])
    positive_index = torch.cat([local + m, local])
    rows = torch.arange(2 * n, device=z1.device)
    logits[rows, self_index] = float("-inf")
    return F.cross_entropy(logits, positive_index)


class SimCLRArgs(ProjectionArgs):
    temperature: float = Field(0.5, gt=0, description="NT-Xent temperature tau")
    proj_hidden_dim: int = Field(512, gt=0)
    proj_dim: int = Field(128, gt=0)
    proj_layers: int = Field(2, ge=1)


class SimCLR(TwoViewMethod):
    """Encoder f, projection head g, NT-Xent between the projections of two views."""

    Args = SimCLRArgs

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features, z1, z2 = self.project_views(batch)
        return {"loss": nt_xent_loss(z1, z2, self.args.temperature), "features": features}
