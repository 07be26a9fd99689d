"""Heads on encoder features: MLP projectors (where an SSL loss is computed) and class
prototypes (ProtoNet training, nearest-prototype evaluation of any encoder)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp_head(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, last_bn: bool = False
) -> nn.Sequential:
    """Linear-BN-ReLU blocks then a final Linear: SimCLR's projection head g(.). `last_bn` adds
    a parameter-free BatchNorm on the output, as the SimSiam and MoCo v3 projectors have."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [
            nn.Linear(dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(True),
        ]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


def prototype_logits(
    support: torch.Tensor, support_label: torch.Tensor, query: torch.Tensor
) -> torch.Tensor:
    """[T, M, N] logits -||query - prototype_n||^2 for support [T, S, D] embeddings with labels
    [T, S] in 0..N-1 and query [T, M, D] embeddings; prototype_n is the mean support embedding of
    class n (in any row order)."""
    members = F.one_hot(support_label).to(support.dtype).transpose(1, 2)
    prototypes = members @ support / members.sum(2, keepdim=True)
    return -((query.unsqueeze(2) - prototypes.unsqueeze(1)) ** 2).sum(-1)
