"""MoCo v3 (Chen, Xie & He 2021): no queue; each query is contrasted with the momentum keys of
the whole global batch, symmetric over the two views, with a prediction head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.distributed import gather_no_grad, world_info
from reprlab.methods.momentum import MomentumArgs, MomentumMethod
from reprlab.models.heads import mlp_head


def moco_v3_contrastive_loss(
    query: torch.Tensor, key: torch.Tensor, temperature: float
) -> torch.Tensor:
    """2t * cross-entropy of this worker's queries against the L2-normalised keys of the global
    batch (gathered, no gradient), the positive being the key of the same image; the 2t factor
    is the paper's, keeping gradient scale independent of t."""
    query = F.normalize(query, dim=1)
    keys = F.normalize(gather_no_grad(key.detach()), dim=1)
    rank, _ = world_info()
    labels = torch.arange(len(query), device=query.device) + rank * len(query)
    return F.cross_entropy(query @ keys.T / temperature, labels) * 2 * temperature


class MoCoV3Args(MomentumArgs):
    temperature: float = Field(0.2, gt=0)
    base_momentum: float = Field(0.99, gt=0, lt=1, description="momentum at step 0, cosine to 1")
    proj_hidden_dim: int = Field(4096, gt=0)
    proj_dim: int = Field(256, gt=0)
    proj_layers: int = Field(3, ge=1)
    proj_last_bn: bool = True
    pred_hidden_dim: int = Field(4096, gt=0)


class MoCoV3(MomentumMethod):
    """Online backbone, projector and predictor; momentum backbone and projector give keys."""

    Args = MoCoV3Args

    def __init__(self, backbone: nn.Module, args: MoCoV3Args) -> None:
        super().__init__(backbone, args)
        self.predictor = mlp_head(args.proj_dim, args.pred_hidden_dim, args.proj_dim, 2)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features, z1, z2 = self.project_views(batch)
        q1, q2 = self.predictor(z1).float(), self.predictor(z2).float()
        k1, k2 = self.target_views(batch)
        t = self.args.temperature
        loss = moco_v3_contrastive_loss(q1, k2, t) + moco_v3_contrastive_loss(q2, k1, t)
        return {"loss": loss, "momentum": torch.tensor(self.momentum), "features": features}
