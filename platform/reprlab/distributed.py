"""Cross-worker collectives (rank and world size, gathers, sums, gradient averaging): one
module below models/, methods/, eval/ and train/ so none of them reimplements a collective."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world_info() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums each slice's gradient over the workers and returns this
    worker's own (what torch.distributed.nn's deprecated all_gather does)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size(), dim=0)[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every worker along dim 0, in rank order. Gradients flow back to each
    worker's own slice (summed over the workers that used it), so a loss over the global batch
    trains every worker's encoder. Every worker's `x` has the same shape."""
    if world_info()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every worker along dim 0, in rank order, without gradients (keys of
    a momentum encoder)."""
    if world_info()[1] == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_info()[1])]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Replace every gradient by its mean over the workers (one flat all-reduce), as DDP would:
    each worker's loss is the mean over its own tasks, so the result is the mean over all tasks.
    A parameter without a gradient on this worker counts as zero."""
    world = world_info()[1]
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for parameter, grad in zip(parameters, grads, strict=True):
        parameter.grad = flat[offset : offset + grad.numel()].view_as(grad)
        offset += grad.numel()


@torch.no_grad()
def summed_over_workers(x: torch.Tensor) -> torch.Tensor:
    """`x` summed element-wise over the workers, the same on every worker (`x` itself on one):
    a batch-wide statistic such as DINO's centre or SwAV's Sinkhorn sums."""
    if world_info()[1] == 1:
        return x
    total = x.clone()
    dist.all_reduce(total)
    return total


def sum_across_workers(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over the workers (float64; unchanged on one worker)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if world_info()[1] > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Rows from every worker (counts may differ), concatenated in rank order, on CPU."""
    world = world_info()[1]
    if world == 1:
        return tensor
    parts: list[torch.Tensor | None] = [None] * world
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def gather_objects(value: object) -> list[object]:
    """`value` from every worker, in rank order (a one-item list on one worker)."""
    world = world_info()[1]
    if world == 1:
        return [value]
    parts: list[object] = [None] * world
    dist.all_gather_object(parts, value)
    return parts
