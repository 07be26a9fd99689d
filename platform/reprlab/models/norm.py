"""Global-batch batch norm: statistics over every worker's samples, as SimCLR's global BN.

With per-worker BN, both views of an image share their worker's batch statistics while many
negatives do not, a shortcut a contrastive loss can exploit. torch's SyncBatchNorm fixes this
on GPUs but refuses CPU tensors, so CPU workers use GlobalBatchNorm below."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from reprlab.distributed import sum_with_grad, world_info


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the concatenation of all workers' batches, differentiable through the
    all-reduce of per-channel sums; plain BatchNorm in eval mode or on a single worker."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_info()[1] == 1:
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() / channels, dtype=x.dtype, device=x.device)
        stats = sum_with_grad(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        total = stats[-1]
        mean = stats[:channels] / total
        var = stats[channels : 2 * channels] / total - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                unbiased = var * total / (total - 1)
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def global_batch_norm(module: nn.Module, use_gpu: bool) -> nn.Module:
    """Swap every BatchNorm in `module` for a global-batch one: torch's SyncBatchNorm on GPU,
    GlobalBatchNorm on CPU. Weights and running statistics are kept."""
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
            setattr(module, name, replacement)
        else:
            global_batch_norm(child, use_gpu)
    return module
