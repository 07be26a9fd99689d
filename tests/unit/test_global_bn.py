"""GlobalBatchNorm across 2 gloo workers equals BatchNorm over the concatenated batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reprlab.models.norm import GlobalBatchNorm, global_batch_norm

from .gloo import run_in_gloo_workers


def _grads(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    return None if bn.weight is None else (bn.weight.grad, bn.bias.grad)


def _reference(x: torch.Tensor, weights: torch.Tensor, affine: bool):
    norm = nn.BatchNorm2d if x.dim() == 4 else nn.BatchNorm1d
    bn = norm(x.shape[1], affine=affine).double()
    inputs = x.clone().requires_grad_()
    out = bn(inputs)
    (out * weights).sum().backward()
    return out.detach(), inputs.grad, _grads(bn), bn.running_mean, bn.running_var


def _part(
    rank: int,
    world: int,
    x: torch.Tensor,
    weights: torch.Tensor,
    affine: bool,
    split: int,
    layout: torch.memory_format,
):
    rows = slice(0, split) if rank == 0 else slice(split, None)
    bn = GlobalBatchNorm(x.shape[1], affine=affine).double()
    inputs = x[rows].contiguous(memory_format=layout).requires_grad_()
    out = bn(inputs)
    (out * weights[rows]).sum().backward()
    return out.detach(), inputs.grad, _grads(bn), bn.running_mean, bn.running_var


NCHW, NHWC = torch.contiguous_format, torch.channels_last


@pytest.mark.parametrize(
    ("shape", "affine", "split", "layout"),
    [
        ((8, 3, 4, 4), True, 4, NCHW),
        ((8, 5), False, 4, NCHW),
        ((8, 3, 4, 4), True, 3, NCHW),
        ((8, 3, 4, 4), True, 4, NHWC),
    ],
    ids=["conv-halves", "flat-no-affine", "unequal-batches", "channels-last"],
)
def test_two_workers_match_full_batch_statistics_and_gradients(
    shape, affine, split, layout
) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator, dtype=torch.float64) * 2 + 1
    weights = torch.randn(*shape, generator=generator, dtype=torch.float64)
    out, grad, affine_grads, running_mean, running_var = _reference(x, weights, affine)
    parts = run_in_gloo_workers(_part, 2, x, weights, affine, split, layout)
    assert torch.allclose(torch.cat([p[0] for p in parts]), out)
    assert torch.allclose(torch.cat([p[1] for p in parts]), grad)
    if affine:  # each worker's affine gradients are its share; DDP's all-reduce sums them
        for index, reference in enumerate(affine_grads):
            assert torch.allclose(parts[0][2][index] + parts[1][2][index], reference)
    else:
        assert parts[0][2] is None and affine_grads is None
    for part in parts:
        assert torch.allclose(part[3], running_mean) and torch.allclose(part[4], running_var)


def test_conversion_keeps_weights_and_is_plain_bn_on_one_process() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.BatchNorm1d(64))
    model[1].weight.data.fill_(2.0)
    reference = model[1]
    converted = global_batch_norm(model, use_gpu=False)
    assert isinstance(converted[1], GlobalBatchNorm) and isinstance(converted[3], GlobalBatchNorm)
    assert torch.equal(converted[1].weight, torch.full((4,), 2.0))
    x = torch.randn(5, 4, 6, 6)
    assert torch.allclose(
        converted[1](x),
        nn.functional.batch_norm(x, None, None, reference.weight, reference.bias, training=True),
    )


def test_conversion_keeps_a_frozen_copy_frozen() -> None:
    """A momentum/EMA copy's norms stay out of the optimiser (DDP fails on parameters that
    require a gradient and never get one)."""
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Sequential(nn.BatchNorm1d(4)))
    frozen = nn.Sequential(nn.BatchNorm2d(3))
    frozen.requires_grad_(False)
    model.append(frozen)
    global_batch_norm(model, use_gpu=False)
    assert [p.requires_grad for p in model.parameters()] == [True] * 4 + [False] * 2
