"""GlobalBatchNorm across 2 gloo workers equals BatchNorm over the concatenated batch."""

from __future__ import annotations

import torch
from torch import nn

from reprlab.models.norm import GlobalBatchNorm, global_batch_norm

from .gloo import run_in_gloo_workers


def _reference(x: torch.Tensor, weights: torch.Tensor):
    bn = nn.BatchNorm2d(x.shape[1]).double()
    inputs = x.clone().requires_grad_()
    out = bn(inputs)
    (out * weights).sum().backward()
    return out.detach(), inputs.grad, bn.weight.grad, bn.running_mean, bn.running_var


def _half(rank: int, world: int, x: torch.Tensor, weights: torch.Tensor):
    n = x.shape[0] // world
    bn = GlobalBatchNorm(x.shape[1]).double()
    inputs = x[rank * n : (rank + 1) * n].clone().requires_grad_()
    out = bn(inputs)
    (out * weights[rank * n : (rank + 1) * n]).sum().backward()
    return out.detach(), inputs.grad, bn.weight.grad, bn.running_mean, bn.running_var


def test_two_workers_match_full_batch_statistics_and_gradients() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 4, 4, generator=generator, dtype=torch.float64) * 2 + 1
    weights = torch.randn(8, 3, 4, 4, generator=generator, dtype=torch.float64)
    out, grad, weight_grad, running_mean, running_var = _reference(x, weights)
    halves = run_in_gloo_workers(_half, 2, x, weights)
    assert torch.allclose(torch.cat([h[0] for h in halves]), out)
    assert torch.allclose(torch.cat([h[1] for h in halves]), grad)
    # each worker's affine gradient is its share; DDP's all-reduce sums them
    assert torch.allclose(halves[0][2] + halves[1][2], weight_grad)
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
