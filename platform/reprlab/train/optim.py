"""Optimisers and the learning-rate schedule of the train loop."""

from __future__ import annotations

import math

import torch

from reprlab.config import JobConfig
from reprlab.train.lars import LARS


def make_optimizer(job: JobConfig, module: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW, SGD or LARS over all trainable parameters; no weight decay on norms and biases. The
    online classifier (`head`, when there is one) gets its own group at `eval.online_linear_lr`
    without decay, as solo-learn's does, so the monitor is useful from the first epochs."""
    head = getattr(module, "head", None)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    decay, no_decay = [], []
    for parameter in module.parameters():
        if parameter.requires_grad and id(parameter) not in head_ids:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": job.optim.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    if head is not None:
        scale = job.eval.online_linear_lr / job.optim.lr
        groups.append({"params": list(head.parameters()), "weight_decay": 0.0, "lr_scale": scale})
    optim = job.optim
    if optim.optimizer == "lars":
        for group in groups[1:]:
            group["lars"] = False  # biases, norms and the online head: plain SGD steps
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
