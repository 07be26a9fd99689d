"""Encoders by name: timm ResNets with a small-image stem for GPU jobs, conv4 for CPU jobs."""

from __future__ import annotations

from collections.abc import Callable

import timm
import torch
from torch import nn


class Conv4(nn.Module):
    """Four conv3x3-BN-ReLU-maxpool blocks, flattened: the standard few-shot backbone
    (Vinyals et al. 2016, Snell et al. 2017), small enough to train on CPU.

    Pooling rounds up (28 -> 14 -> 7 -> 4 -> 2) so no border row is dropped, and the last map
    is pooled to `grid` x `grid` before flattening, so the feature size (width * grid^2) does
    not depend on the input size."""

    def __init__(self, in_chans: int = 3, width: int = 64, depth: int = 4, grid: int = 2) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_chans
        for _ in range(depth):
            blocks += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            channels = width
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(grid), nn.Flatten())
        self.num_features = width * grid * grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def small_stem_resnet(name: str, in_chans: int) -> nn.Module:
    """A timm ResNet for 32x32-sized images: 3x3 stride-1 first conv and no max-pool, as in the
    SimCLR CIFAR experiments; the classifier is removed so forward() returns pooled features."""
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
    model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "conv4": lambda in_chans, width=64: Conv4(in_chans, width),
    "resnet18": lambda in_chans: small_stem_resnet("resnet18", in_chans),
    "resnet50": lambda in_chans: small_stem_resnet("resnet50", in_chans),
}


def build_backbone(name: str, in_chans: int, **kwargs) -> nn.Module:
    """An encoder whose forward maps [B,C,H,W] images to [B, num_features] features."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}'; allowed: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](in_chans, **kwargs)
