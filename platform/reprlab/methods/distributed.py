"""Cross-worker collectives used by global-batch losses."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def world_info() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every worker along dim 0, in rank order. Gradients flow back to each
    worker's own slice (summed over the workers that used it), so a loss over the global batch
    trains every worker's encoder."""
    if world_info()[1] == 1:
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)


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
