"""Momentum (EMA) networks shared by MoCo, BYOL and the semi-supervised methods that evaluate an
EMA copy: the copy, the update, the buffer copy and the schedules of the momentum coefficient."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from reprlab.methods.base import ProjectionArgs, TwoViewMethod


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """1 - (1 - base) * (cos(pi * k / K) + 1) / 2: `base` at step 0 rising to 1 at the last
    step (BYOL's target decay rate, MoCo v3's momentum)."""
    progress = min(step, total_steps) / max(total_steps, 1)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of `module` to be moved by `ema_update`, never by the optimiser."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter."""
    for target_param, online_param in zip(target.parameters(), online.parameters(), strict=True):
        target_param.lerp_(online_param.detach(), 1 - momentum)


@torch.no_grad()
def copy_buffers(target: nn.Module, online: nn.Module) -> None:
    """target's buffers (BatchNorm running statistics and counts) <- online's: the EMA model of
    the FixMatch code keeps the online statistics, since `ema_update` moves parameters only."""
    for target_buffer, online_buffer in zip(target.buffers(), online.buffers(), strict=True):
        target_buffer.copy_(online_buffer)


class MomentumArgs(ProjectionArgs):
    """Projector shape plus the momentum coefficient of the target network."""

    base_momentum: float = 0.99


class MomentumMethod(TwoViewMethod):
    """A two-view method whose targets come from a momentum copy of backbone and projector,
    moved after every optimiser step by `momentum_at(step)` (the loop calls `on_step_end`)."""

    Args = MomentumArgs

    def __init__(self, backbone: nn.Module, args: MomentumArgs) -> None:
        super().__init__(backbone, args)
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projector = momentum_copy(self.projector)
        self.momentum = args.base_momentum

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The coefficient for the update after optimiser step `step` (cosine to 1 by
        default; MoCo v2 keeps it fixed)."""
        return cosine_momentum(self.args.base_momentum, step, total_steps)

    @torch.no_grad()
    def target_views(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 target projections of `view1` and `view2` (no gradient)."""
        target = nn.Sequential(self.target_backbone, self.target_projector)
        return target(batch["view1"]).float(), target(batch["view2"]).float()

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.momentum = self.momentum_at(step, total_steps)
        ema_update(self.target_backbone, self.backbone, self.momentum)
        ema_update(self.target_projector, self.projector, self.momentum)
