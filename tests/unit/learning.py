"""Whether a method can learn at all: its loss on one fixed batch before and after a few steps."""

from __future__ import annotations

import torch

from reprlab.methods import Method


def loss_before_and_after(
    method: Method, images: torch.Tensor, lr: float, steps: int = 30
) -> tuple[float, float]:
    """`method`'s loss on the batch `view1 = images` before and after `steps` AdamW steps on
    it; each step draws its own randomness (masks, tiles), both measurements the same."""
    optimizer = torch.optim.AdamW(method.parameters(), lr=lr)

    def loss_at(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return method.training_step({"view1": images})["loss"]

    before = loss_at(123).item()
    for step in range(steps):
        optimizer.zero_grad()
        loss_at(step).backward()
        optimizer.step()
    return before, loss_at(123).item()
