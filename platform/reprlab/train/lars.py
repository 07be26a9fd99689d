"""LARS (You et al. 2017): SGD with momentum whose step for each weight tensor is scaled by a
layer-wise trust ratio ||w|| / ||g + wd w||, the optimiser of SimCLR, BYOL and Barlow Twins.
torch and timm ship none with the SSL conventions (biases and norms excluded), so it is here."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class LARS(torch.optim.Optimizer):
    """Parameter groups with `lars=False` (biases, norm weights) take plain SGD steps."""

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        eps: float = 1e-8,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, eps=eps, lars=True
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad.add(param, alpha=group["weight_decay"])
                if group["lars"]:
                    param_norm, update_norm = param.norm(), update.norm()
                    trust = group["eta"] * param_norm / (update_norm + group["eps"])
                    update.mul_(torch.where((param_norm > 0) & (update_norm > 0), trust, 1.0))
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                param.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss
