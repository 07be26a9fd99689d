"""GlobalBatchNorm across 2 gloo workers equals BatchNorm over the concatenated batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reprlab.models.norm import GlobalBatchNorm, global_batch_norm

from .gloo import run_in_gloo_workers


def _grad(weight: nn.Parameter | None) -> torch.Tensor | None:
    return None if weight is None else weight.grad


def _reference(x: torch.Tensor, weights: torch.Tensor, affine: bool):
    norm = nn.BatchNorm2d if x.dim() == 4 else nn.BatchNorm1d
    bn = norm(x.shape[1], affine=affine).double()
    inputs = x.clone().requires_grad_()
    out = bn(inputs)
    (out * weights).sum().backward()
    return out.detach(), inputs.grad, _grad(bn.weight), bn.running_mean, bn.running_var


def _half(rank: int, world: int, x: torch.Tensor, weights: torch.Tensor, affine: bool):
    n = x.shape[0] // world
    bn = GlobalBatchNorm(x.shape[1], affine=affine).double()
    inputs = x[rank * n : (rank + 1) * n].clone().requires_grad_()
    out = bn(inputs)
    (out * weights[rank * n : (rank + 1) * n]).sum().backward()
    return out.detach(), inputs.grad, _grad(bn.weight), bn.running_mean, bn.running_var


@pytest.mark.parametrize(("shape", "affine"), [((8, 3, 4, 4), True), ((8, 5), False)])
def test_two_workers_match_full_batch_statistics_and_gradients(shape, affine) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator, dtype=torch.float64) * 2 + 1
    weights = torch.randn(*shape, generator=generator, dtype=torch.float64)
    out, grad, weight_grad, running_mean, running_var = _reference(x, weights, affine)
    halves = run_in_gloo_workers(_half, 2, x, weights, affine)
    assert torch.allclose(torch.cat([h[0] for h in halves]), out)
    assert torch.allclose(torch.cat([h[1] for h in halves]), grad)
    if affine:  # each worker's affine gradient is its share; DDP's all-reduce sums them
        assert torch.allclose(halves[0][2] + halves[1][2], weight_grad)
    else:
        assert halves[0][2] is None and weight_grad is None
    for half in halves:
        assert torch.allclose(half[3], running_mean) and torch.allclose(half[4], running_var)


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
