"""Optimisers and the learning-rate schedule of the train loop."""

from __future__ import annotations

import math

import torch

from reprlab.config import JobConfig
from reprlab.train.lars import LARS


def make_optimizer(job: JobConfig, module: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW, SGD or LARS over all trainable parameters; no weight decay on norms and biases,
    each parameter at its method's `lr_scales` (1 by default). The online classifier (`head`,
    when there is one) gets its own group at `eval.online_linear_lr` without decay, as
    solo-learn's does, so the monitor is useful from the first epochs."""
    head = getattr(module, "head", None)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    scales = getattr(module, "method", module).lr_scales()
    grouped: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for parameter in module.parameters():
        if parameter.requires_grad and id(parameter) not in head_ids:
            key = (parameter.ndim > 1, scales.get(id(parameter), 1.0))
            grouped.setdefault(key, []).append(parameter)
    groups = [
        {
            "params": params,
            "weight_decay": job.optim.weight_decay if decayed else 0.0,
            "lr_scale": scale,
            "lars": decayed,  # biases and norms take plain SGD steps under LARS
        }
        for (decayed, scale), params in grouped.items()
    ]
    if head is not None:
        scale = job.eval.online_linear_lr / job.optim.lr
        head_group = {"params": list(head.parameters()), "weight_decay": 0.0, "lr_scale": scale}
        groups.append(head_group | {"lars": False})
    optim = job.optim
    if optim.optimizer == "lars":
        return LARS(groups, lr=optim.lr, momentum=optim.momentum, eta=optim.lars_eta)
    if optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas)


def warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up from ~0 to base_lr, then cosine decay to 0 at total_steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group to `lr` times its own `lr_scale`."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
