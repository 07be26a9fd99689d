"""(Denoising) autoencoder: the encoder's feature vector is the code, a transposed-convolution
decoder mirroring conv4 reconstructs the clean image from it (Vincent et al. 2008 when the
input is corrupted by masking noise)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.methods.base import Method, MethodArgs
from reprlab.models.backbones import BACKBONES, VIT_SIZES

DECODER_GRID = 2
"""Side of the map the code is projected to: conv4's pooled grid, whose flattening it mirrors."""
DECODER_DEPTH = 4
"""Upsampling blocks, one per conv4 max-pool."""


def stage_sizes(size: tuple[int, int], depth: int) -> list[tuple[int, int]]:
    """Map sizes from the image down through `depth` ceil-mode halvings, as conv4's pools give
    them (28 -> 14 -> 7 -> 4 -> 2), image size first."""
    sizes = [size]
    for _ in range(depth):
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return sizes


def input_channels(backbone: nn.Module) -> int:
    """Channels of the images `backbone` reads: those of its first convolution."""
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ValueError(f"autoencoder: {type(backbone).__name__} has no convolution to read from")


def masking_noise(images: torch.Tensor, probability: float) -> torch.Tensor:
    """`images` with each pixel (all its channels) zeroed with `probability`, independently."""
    batch, _, height, width = images.shape
    dropped = torch.rand(batch, 1, height, width, device=images.device) < probability
    return images.masked_fill(dropped, 0.0)


class UpBlock(nn.Module):
    """A 3x3 stride-2 transposed convolution to an exact output size, then BN-ReLU unless last:
    conv4's conv-pool block run backwards."""

    def __init__(self, in_chans: int, out_chans: int, last: bool) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_chans, out_chans, 3, stride=2, padding=1, bias=last)
        self.post = nn.Identity() if last else nn.Sequential(nn.BatchNorm2d(out_chans), nn.ReLU())

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Upsample [B, C, h, w] to `size`, which must be 2h - 1 or 2h (likewise for w)."""
        return self.post(self.conv(x, output_size=size))


class ConvDecoder(nn.Module):
    """Code [B, D] -> image [B, C, H, W] in [0, 1]: a linear layer to a `width` x 2 x 2 map, then
    one transposed convolution per conv4 pool, each to the exact size that pool received.

    The output size is given at each call, so one decoder serves any image size."""

    def __init__(self, code_dim: int, out_chans: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.project = nn.Sequential(
            nn.Linear(code_dim, width * DECODER_GRID * DECODER_GRID), nn.ReLU()
        )
        self.blocks = nn.ModuleList(
            UpBlock(width, out_chans if last else width, last)
            for last in [False] * (DECODER_DEPTH - 1) + [True]
        )

    def forward(self, code: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        *targets, smallest = stage_sizes(size, DECODER_DEPTH)
        x = self.project(code).view(-1, self.width, DECODER_GRID, DECODER_GRID)
        if x.shape[-2:] != smallest:  # undo conv4's pooling of its last map to 2 x 2
            x = F.interpolate(x, size=smallest, mode="nearest")
        for block, target in zip(self.blocks, reversed(targets), strict=True):
            x = block(x, target)
        return torch.sigmoid(x)


class AutoencoderArgs(MethodArgs):
    denoising: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability each input pixel is zeroed (masking noise, Vincent et al. "
        "2008); the target stays the clean image",
    )
    decoder_width: int = Field(64, gt=0, description="channels of the decoder's feature maps")


class Autoencoder(Method):
    """Encoder plus a conv decoder trained with the pixel MSE against the clean `view1`; the
    code is the backbone's feature vector, so what the decoder needs is what `embed` gives."""

    Args = AutoencoderArgs
    backbones: ClassVar[tuple[str, ...]] = (*BACKBONES, *VIT_SIZES)
    """The trainable encoders: the code is learnt with the decoder."""

    def __init__(self, backbone: nn.Module, args: AutoencoderArgs) -> None:
        super().__init__(backbone, args)
        self.decoder = ConvDecoder(
            backbone.num_features, input_channels(backbone), args.decoder_width
        )

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """The decoder's reconstruction [B,C,H,W] in [0, 1] of float [B,C,H,W] images in [0, 1],
        without noise (for reconstruction figures)."""
        return self.decoder(self.backbone(images), images.shape[-2:])

    def pictures(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The held-out images (first row) above their reconstructions (second row)."""
        return {"autoencoder/reconstructions.png": torch.cat([images, self.reconstruct(images)])}

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["view1"]
        corrupted = images
        if self.args.denoising > 0:
            corrupted = masking_noise(images, self.args.denoising)
        code = self.backbone(corrupted)
        loss = F.mse_loss(self.decoder(code, images.shape[-2:]).float(), images.float())
        if self.args.denoising > 0:
            with torch.no_grad():
                code = self.backbone(images)  # the probe reads the clean image's features
        return {"loss": loss, "reconstruction_mse": loss.detach(), "features": code.detach()}
