"""Batch mixers for supervised and fine-tuning jobs: mixup and cutmix of each image with a
partner from the same batch, each pair with its own mixing weight."""

from __future__ import annotations

import numpy as np
import torch

from reprlab.augment.ops import per_image
from reprlab.augment.spatial import random_boxes

MIXERS = ("none", "mixup", "cutmix")


def beta(n: int, alpha: float, gen: torch.Generator, device) -> torch.Tensor:
    """n draws from Beta(alpha, alpha), reproducible from `gen`. torch's Beta sampler takes no
    generator, so numpy draws them from a seed taken from `gen`."""
    seed = int(torch.randint(2**62, (1,), generator=gen, device=gen.device))
    draws = np.random.default_rng(seed).beta(alpha, alpha, n)
    return torch.as_tensor(draws, dtype=torch.float32, device=device)


def mixup(images: torch.Tensor, partner: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """uint8 [B,C,H,W] -> weight * image + (1 - weight) * its partner, rounded to uint8."""
    x = images.float()
    mixed = per_image(weight) * x + (1 - per_image(weight)) * x[partner]
    return mixed.round_().clamp_(0, 255).to(torch.uint8)


def cutmix(
    images: torch.Tensor, partner: torch.Tensor, weight: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a box of each image's partner, of area about (1 - weight) of the image at a random
    centre (clipped at the border, timm's rand_bbox), into the image; returns the images and
    the exact fraction of each image's pixels that stayed its own."""
    n, _, height, width = images.shape
    side = torch.sqrt(1 - weight)
    box_h = (height * side).long()
    box_w = (width * side).long()
    mask = random_boxes(height, width, box_h, box_w, gen)
    kept = 1 - mask.flatten(1).float().mean(dim=1)
    return torch.where(mask, images[partner], images), kept


def mix_batch(
    images: torch.Tensor, mixer: str, alpha: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 [B,C,H,W] -> (mixed images, partner index int64 [B], weight float32 [B]): the
    weight of each image's own label, lambda ~ Beta(alpha, alpha) (for cutmix, the kept area)."""
    n, device = images.shape[0], images.device
    partner = torch.randperm(n, generator=gen, device=device)
    weight = beta(n, alpha, gen, device)
    if mixer == "mixup":
        return mixup(images, partner, weight), partner, weight
    if mixer == "cutmix":
        mixed, kept = cutmix(images, partner, weight, gen)
        return mixed, partner, kept
    raise ValueError(f"mixer: must be one of {', '.join(MIXERS[1:])}, got {mixer!r}")
