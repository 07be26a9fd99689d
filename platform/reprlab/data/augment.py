"""Named view policies: batched, per-sample augmentation of uint8 image batches into two views.

Every policy is a frozen dataclass of its output `size` and its parameters (the fields of the
job's `data.augment` section, so Ray Tune can search them) with
`view_pair(images uint8 [B,H,W,C], gen) -> (view1, view2)`, both uint8 [B,C,size,size]. Every
image draws its own random parameters, from `gen` alone, so a seed reproduces the views, and the
ops (data/augment_ops.py, data/randaugment.py) are batched tensor ops that run on CPU inside
Ray Data's `map_batches` and on a CUDA batch with a CUDA generator alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from reprlab.data.augment_ops import (
    bernoulli,
    blur_where,
    color_jitter,
    crop_flip_resize,
    cutout,
    grayscale,
    per_image,
    random_gaussian_blur,
    random_grayscale,
    random_resized_crop_boxes,
    random_solarize,
    random_translate,
    solarize,
    to_float_nchw,
    to_uint8,
)
from reprlab.data.randaugment import rand_augment


@dataclass(frozen=True)
class ViewPolicy:
    """What every policy has: the view size, and the batch mixer the pipeline applies to view 1
    afterwards ("mixup" or "cutmix" for supervised jobs, data/mix.py)."""

    size: int
    mixer: Literal["none", "mixup", "cutmix"] = field(default="none", kw_only=True)
    mix_alpha: float = field(default=1.0, kw_only=True)

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> one augmented view per image, uint8 [B,C,size,size]."""
        raise NotImplementedError

    def view_pair(
        self, images: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independently augmented views of the same uint8 [B,H,W,C] batch."""
        return self(images, gen), self(images, gen)


@dataclass(frozen=True)
class CropPolicy(ViewPolicy):
    """A policy that starts with a random resized crop and a horizontal flip."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5

    def crop(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> float [B,C,size,size]: cropped, flipped, resized."""
        x = to_float_nchw(images)
        n, _, height, width = x.shape
        boxes = random_resized_crop_boxes(
            n, height, width, self.crop_scale, self.crop_ratio, gen, x.device
        )
        return crop_flip_resize(x, boxes, bernoulli(n, self.hflip_p, gen, x.device), self.size)


def simclr_jitter(strength: float) -> tuple[float, float, float, float]:
    """SimCLR's colour jitter of strength s: brightness, contrast, saturation 0.8s, hue 0.2s."""
    return 0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength


@dataclass(frozen=True)
class SimCLRAugment(CropPolicy):
    """SimCLR: random resized crop, horizontal flip, colour jitter with probability `jitter_p`,
    random grayscale, Gaussian blur with probability `blur_p`. A colour `strength` s, when
    given, sets the four jitter amounts to SimCLR's (0.8s, 0.8s, 0.8s, 0.2s)."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    strength: float | None = None
    blur_p: float = 0.0

    def __post_init__(self) -> None:
        if self.strength is not None:
            names = ("brightness", "contrast", "saturation", "hue")
            for name, value in zip(names, simclr_jitter(self.strength), strict=True):
                object.__setattr__(self, name, value)

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = self.crop(images, gen)
        x = color_jitter(
            x, self.brightness, self.contrast, self.saturation, self.hue, self.jitter_p, gen
        )
        x = random_grayscale(x, self.grayscale_p, gen)
        return to_uint8(random_gaussian_blur(x, self.blur_p, gen))


@dataclass(frozen=True)
class BYOLAugment(CropPolicy):
    """BYOL's asymmetric views (Grill et al. 2020, table 6): crop, flip, colour jitter, grayscale,
    then Gaussian blur and solarization with different probabilities for each view."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    view1_blur_p: float = 1.0
    view2_blur_p: float = 0.1
    view1_solarize_p: float = 0.0
    view2_solarize_p: float = 0.2

    def __call__(self, images: torch.Tensor, gen: torch.Generator, view: int = 1) -> torch.Tensor:
        """View `view` (1 or 2) of each image."""
        x = self.crop(images, gen)
        x = color_jitter(
            x, self.brightness, self.contrast, self.saturation, self.hue, self.jitter_p, gen
        )
        x = random_grayscale(x, self.grayscale_p, gen)
        first = view == 1
        x = random_gaussian_blur(x, self.view1_blur_p if first else self.view2_blur_p, gen)
        return to_uint8(
            random_solarize(x, self.view1_solarize_p if first else self.view2_solarize_p, gen)
        )

    def view_pair(
        self, images: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self(images, gen, view=1), self(images, gen, view=2)


@dataclass(frozen=True)
class MAEAugment(CropPolicy):
    """MAE's pretraining views: random resized crop (scale 0.2-1) and flip only."""

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return to_uint8(self.crop(images, gen))


@dataclass(frozen=True)
class RandAugment(CropPolicy):
    """Random resized crop and flip, then RandAugment: `num_ops` ops at magnitude bin
    `magnitude` (0-30), drawn per image (data/randaugment.py)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    num_ops: int = 2
    magnitude: int = 9

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = self.crop(images, gen)
        return to_uint8(rand_augment(x, self.num_ops, self.magnitude, gen))


@dataclass(frozen=True)
class ThreeAugment(CropPolicy):
    """DeiT III's 3-Augment: crop and flip, then one of grayscale, solarization or Gaussian blur
    per image (uniformly), then colour jitter of `color_jitter` (brightness, contrast,
    saturation; no hue)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    color_jitter: float = 0.3

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = self.crop(images, gen)
        n, device = x.shape[0], x.device
        choice = torch.randint(3, (n,), generator=gen, device=device)
        x = torch.where(per_image(choice == 0), grayscale(x), x)
        x = torch.where(per_image(choice == 1), solarize(x), x)
        x = blur_where(x, choice == 2, gen)
        amount = self.color_jitter
        return to_uint8(color_jitter(x, amount, amount, amount, 0.0, 1.0, gen))


@dataclass(frozen=True)
class WeakAugment(ViewPolicy):
    """FixMatch's weak view: resize to `size`, flip, shift by up to `translate` of the side
    (whole pixels, filled by `padding_mode`: "reflect" or "zeros")."""

    hflip_p: float = 0.5
    translate: float = 0.125
    padding_mode: Literal["reflect", "zeros"] = "reflect"

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return to_uint8(self.weak(images, gen))

    def weak(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> float [B,C,size,size], flipped and translated."""
        x = to_float_nchw(images)
        n, _, height, width = x.shape
        whole = torch.tensor([0.0, 0.0, height, width], device=x.device).expand(n, 4)
        flip = bernoulli(n, self.hflip_p, gen, x.device)
        x = crop_flip_resize(x, whole, flip, self.size)
        return random_translate(x, self.translate, self.padding_mode, gen)


@dataclass(frozen=True)
class StrongAugment(WeakAugment):
    """FixMatch's strong view: the weak view, then RandAugment (`num_ops`, `magnitude`) and a
    gray Cutout square of side `cutout` of the image."""

    num_ops: int = 2
    magnitude: int = 10
    cutout: float = 0.5

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = rand_augment(self.weak(images, gen), self.num_ops, self.magnitude, gen)
        return to_uint8(cutout(x, self.cutout, gen))


POLICIES: dict[str, type[ViewPolicy]] = {
    "simclr": SimCLRAugment,
    "byol": BYOLAugment,
    "mae": MAEAugment,
    "randaugment": RandAugment,
    "three_augment": ThreeAugment,
    "weak": WeakAugment,
    "strong": StrongAugment,
}


def two_views(
    images: torch.Tensor, policy: ViewPolicy, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmentations of the same uint8 [B,H,W,C] batch by `policy` (asymmetric policies
    make the two differently)."""
    return policy.view_pair(images, gen)
