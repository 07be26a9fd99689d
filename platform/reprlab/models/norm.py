"""Global-batch batch norm: statistics over every worker's samples, as SimCLR's global BN.

With per-worker BN, both views of an image share their worker's batch statistics while many
negatives do not, a shortcut a contrastive loss can exploit. torch's SyncBatchNorm fixes this
on GPUs but refuses CPU tensors, so CPU workers use GlobalBatchNorm below."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from reprlab.distributed import world_info


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format of x, so its gradient is made contiguous the same way (a channels-last
    gradient turned NCHW makes torch's batch-norm backward mix layouts, 1.3x the step)."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class _GlobalBatchNormFunction(torch.autograd.Function):
    """Batch norm with per-channel statistics summed over the workers, forward and backward
    (SyncBatchNorm's algorithm): torch's fused CPU kernels normalise and reduce, and only
    per-channel sums cross the workers. Written out because torch runs SyncBatchNorm on GPUs
    only; against the same algorithm in elementwise autograd ops a quickstart step on 2 gloo
    workers takes 242 instead of 325 ms (per-worker BatchNorm: 193 ms; benchmarks/global_bn.py)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        eps: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = x.new_full((1,), x.numel() / channels)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])  # 5x var_mean's speed here
        dist.all_reduce(stats)
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels : 2 * channels] / total - mean * mean).clamp_min(0)
        scale = weight if weight is not None else torch.ones_like(mean)
        y = F.batch_norm(x, mean, var, scale, bias, training=False, eps=eps)
        ctx.save_for_backward(x, scale, mean, var, total)
        ctx.eps, ctx.affine = eps, weight is not None
        unbiased = var * total / (total - 1)
        ctx.mark_non_differentiable(mean, unbiased)
        return y, mean, unbiased

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor, _mean: torch.Tensor, _unbiased: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, None]:
        x, scale, mean, var, total = ctx.saved_tensors
        grad = grad.contiguous(memory_format=_layout(x))
        # eval-mode backward: grad * scale * invstd, and this worker's sum(grad * x_hat), sum(grad)
        grad_x, grad_scale, grad_shift = torch.ops.aten.native_batch_norm_backward(
            grad, x, scale, mean, var, None, None, False, ctx.eps, [True, True, True]
        )
        sums = torch.cat([grad_shift, grad_scale])
        dist.all_reduce(sums)
        channels = mean.shape[0]
        grad_shift_all, grad_scale_all = sums[:channels], sums[channels:]
        invstd = torch.rsqrt(var + ctx.eps)
        k = scale * invstd / total
        # minus what the global mean and variance pass back: k * (sum(g) + x_hat * sum(g x_hat))
        shape = [1, channels] + [1] * (x.dim() - 2)
        offset = k * (invstd * mean * grad_scale_all - grad_shift_all)
        slope = -k * invstd * grad_scale_all
        grad_x.add_(offset.view(shape)).addcmul_(x, slope.view(shape))
        if not ctx.affine:
            return grad_x, None, None, None
        return grad_x, grad_scale, grad_shift, None


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the concatenation of all workers' batches, differentiable through the
    all-reduce of per-channel sums; plain BatchNorm in eval mode or on a single worker."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_info()[1] == 1:
            return super().forward(x)
        y, mean, unbiased_var = _GlobalBatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased_var, self.momentum)
        return y


def global_batch_norm(module: nn.Module, use_gpu: bool) -> nn.Module:
    """Swap every BatchNorm in `module` for a global-batch one: torch's SyncBatchNorm on GPU,
    GlobalBatchNorm on CPU. Weights, running statistics and frozen parameters (a momentum
    copy's) are kept."""
    if use_gpu:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d):
            replacement = GlobalBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            replacement.load_state_dict(child.state_dict())
            for own, original in zip(replacement.parameters(), child.parameters(), strict=True):
                own.requires_grad_(original.requires_grad)
            setattr(module, name, replacement)
        else:
            global_batch_norm(child, use_gpu)
    return module
