"""MoCo v2 (Chen et al. 2020, after He et al. 2019): queries from the online encoder, keys from
a momentum encoder, negatives from a queue of past keys, InfoNCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.distributed import gather_no_grad
from reprlab.methods.momentum import MomentumArgs, MomentumMethod


def info_nce_loss(
    query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """-log exp(q.k+/t) / (exp(q.k+/t) + sum_queue exp(q.k-/t)) averaged over queries, with q
    and k L2-normalised here and `queue` rows already unit vectors; keys carry no gradient."""
    query = F.normalize(query, dim=1)
    key = F.normalize(key, dim=1).detach()
    positive = (query * key).sum(dim=1, keepdim=True)
    negatives = query @ queue.T
    logits = torch.cat([positive, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device))


class KeyQueue(nn.Module):
    """A FIFO of the last `size` keys (unit vectors) of the global batch; a buffer, so it is
    checkpointed and identical on every worker."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest entries by this step's keys, gathered from every worker first so
        that all workers hold the same negatives."""
        keys = F.normalize(gather_no_grad(keys), dim=1).to(self.keys.dtype)
        size = self.keys.shape[0]
        keys = keys[-size:]
        index = (self.pointer + torch.arange(len(keys), device=keys.device)) % size
        self.keys[index] = keys
        self.pointer.copy_((self.pointer + len(keys)) % size)


class MoCoV2Args(MomentumArgs):
    temperature: float = Field(0.2, gt=0, description="InfoNCE temperature")
    base_momentum: float = Field(0.999, gt=0, lt=1, description="fixed key-encoder momentum m")
    queue_size: int = Field(65536, gt=0, description="negatives kept from past batches")
    proj_hidden_dim: int = Field(2048, gt=0)
    proj_dim: int = Field(128, gt=0)
    proj_layers: int = Field(2, ge=1)


class MoCoV2(MomentumMethod):
    """Momentum contrast with an MLP head; the loss is symmetrised over the two views (each
    view is query once and key once), and both views' keys are enqueued."""

    Args = MoCoV2Args

    def __init__(self, backbone: nn.Module, args: MoCoV2Args) -> None:
        super().__init__(backbone, args)
        self.queue = KeyQueue(args.queue_size, args.proj_dim)

    def momentum_at(self, step: int, total_steps: int) -> float:
        return self.args.base_momentum

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features, q1, q2 = self.project_views(batch)
        k1, k2 = self.target_views(batch)
        negatives = self.queue.keys.clone()
        t = self.args.temperature
        loss = (info_nce_loss(q1, k2, negatives, t) + info_nce_loss(q2, k1, negatives, t)) / 2
        self.queue.enqueue(torch.cat([k1, k2]))
        return {"loss": loss, "features": features}
