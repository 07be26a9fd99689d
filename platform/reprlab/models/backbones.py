"""Encoders by name: timm ResNets with a small-image stem, WRN-28-2 and timm ViTs for GPU jobs,
conv4 and vit_mini for CPU jobs, raw pixels for the classical baselines."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from reprlab.models.classical import PixelEncoder


class Conv4(nn.Module):
    """Four conv3x3-BN-ReLU-maxpool blocks, flattened: the standard few-shot backbone
    (Vinyals et al. 2016, Snell et al. 2017), small enough to train on CPU.

    Pooling rounds up (28 -> 14 -> 7 -> 4 -> 2) so no border row is dropped, and the last map
    is pooled to `grid` x `grid` before flattening, so the feature size (width * grid^2) does
    not depend on the input size.

    Its conv weights are channels-last, so torch's CPU convolutions, batch norms and max-pools
    run in NHWC: a quickstart step takes 0.72x the time of NCHW's (benchmarks/global_bn.py)."""

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
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def small_stem_resnet(name: str, in_chans: int) -> nn.Module:
    """A timm ResNet for 32x32-sized images: 3x3 stride-1 first conv and no max-pool, as in the
    SimCLR CIFAR experiments; the classifier is removed so forward() returns pooled features."""
    import timm  # here: only these jobs pay its import (benchmarks/worker_imports.py)

    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
    model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


WRN_LEAK = 0.1  # LeakyReLU slope of FixMatch's WRN
WRN_BN_MOMENTUM = 0.001  # torch's convention: the TF reference's decay 0.999


def _wrn_bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=WRN_BN_MOMENTUM)


class PreActBlock(nn.Module):
    """Wide ResNet basic block, BN-act-conv twice, as in the FixMatch authors' TF code: the
    shortcut is the input, or a 1x1 conv of it (of its activation when
    `activate_before_residual`) where the width or stride changes."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, activate_before_residual: bool = False
    ) -> None:
        super().__init__()
        self.bn1 = _wrn_bn(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _wrn_bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.act = nn.LeakyReLU(WRN_LEAK)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        self.activate_before_residual = activate_before_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.act(self.bn1(x))
        out = self.conv2(self.act(self.bn2(self.conv1(activated))))
        if self.shortcut is None:
            return x + out
        return self.shortcut(activated if self.activate_before_residual else x) + out


class WideResNet(nn.Module):
    """WRN-depth-widen (Zagoruyko & Komodakis 2016) for 32x32 images as in FixMatch (Sohn et
    al. 2020): a 16-channel 3x3 conv, three groups of (depth - 4) / 6 pre-activation blocks of
    width 16, 32, 64 times `widen` (the last two halve the resolution), BN + LeakyReLU(0.1)
    and global average pooling. Weights initialised as the reference does."""

    def __init__(self, in_chans: int = 3, depth: int = 28, widen: int = 2) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        blocks = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)
        groups, channels = [], 16
        for index, width in enumerate(widths):
            group = [PreActBlock(channels, width, 1 if index == 0 else 2, index == 0)]
            group += [PreActBlock(width, width, 1) for _ in range(blocks - 1)]
            groups.append(nn.Sequential(*group))
            channels = width
        self.groups = nn.Sequential(*groups)
        self.final = nn.Sequential(_wrn_bn(channels), nn.LeakyReLU(WRN_LEAK))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.final(self.groups(self.stem(x))))


def sincos_2d_pos_embed(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding of MAE ([grid_h * grid_w, dim], row-major):
    half of the channels encode the row, half the column, each as sin/cos at dim/4
    frequencies 1 / 10000^(k / (dim/4))."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64),
        torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "vit_mini": (128, 6, 4),
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
}
"""(embed_dim, depth, num_heads) of each ViT; vit_mini is a CPU-sized ViT for 28x28 digits."""


def vision_transformer(name: str, in_chans: int, image_size: int, patch_size: int) -> nn.Module:
    """A timm ViT with a class token and a fixed (frozen) 2D sin-cos position embedding, as in
    MAE; forward() returns the mean of the normalised patch tokens (class token excluded)."""
    from timm.models.vision_transformer import VisionTransformer  # as timm above

    embed_dim, depth, num_heads = VIT_SIZES[name]
    model = VisionTransformer(
        img_size=image_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=0,
        global_pool="avg",
        fc_norm=False,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
    )
    grid_h, grid_w = model.patch_embed.grid_size
    with torch.no_grad():
        model.pos_embed.zero_()
        model.pos_embed[0, 1:] = sincos_2d_pos_embed(embed_dim, grid_h, grid_w)
    model.pos_embed.requires_grad_(False)
    return model


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "conv4": lambda in_chans, width=64: Conv4(in_chans, width),
    "resnet18": lambda in_chans: small_stem_resnet("resnet18", in_chans),
    "resnet50": lambda in_chans: small_stem_resnet("resnet50", in_chans),
    "wrn28_2": lambda in_chans: WideResNet(in_chans, depth=28, widen=2),
}


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The encoder's stages from input to output, the unit of partial freezing, partial
    re-initialisation and layer-wise learning-rate decay: conv4's blocks, a timm ResNet's
    stem and layer1-4, or a WideResNet's stem conv, three groups and final BN + act.
    ValueError for an encoder without such stages (the ViTs, for now)."""
    if isinstance(backbone, Conv4):
        layers = list(backbone.features)[:-2]  # then the pooling to a grid and the flatten
        return [nn.Sequential(*layers[i : i + 4]) for i in range(0, len(layers), 4)]
    if isinstance(backbone, WideResNet):
        return [backbone.stem, *backbone.groups, backbone.final]
    if hasattr(backbone, "layer4"):
        stem = nn.Sequential(backbone.conv1, backbone.bn1)
        return [stem, backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
    raise ValueError(f"{type(backbone).__name__} has no stages (conv4, ResNets and WRNs have)")


def build_backbone(
    name: str, in_chans: int, image_size: int = 32, patch_size: int = 4, **kwargs
) -> nn.Module:
    """An encoder whose forward maps [B,C,H,W] images to [B, num_features] features.

    `image_size` and `patch_size` shape the ViTs (the image side must be a multiple of the
    patch side); the convolutional encoders take any size and ignore them."""
    if name in VIT_SIZES:
        if image_size % patch_size:
            raise ValueError(
                f"patch_size {patch_size} must divide image_size {image_size} for '{name}'"
            )
        return vision_transformer(name, in_chans, image_size, patch_size, **kwargs)
    if name == "pixels":
        return PixelEncoder(in_chans, image_size)
    if name not in BACKBONES:
        allowed = ", ".join(sorted([*BACKBONES, *VIT_SIZES, "pixels"]))
        raise ValueError(f"unknown backbone '{name}'; allowed: {allowed}")
    return BACKBONES[name](in_chans, **kwargs)
