"""The view policies, each one pydantic model of its job fields and its batched transform:
SimCLR, BYOL, MAE, RandAugment, DeiT III's 3-Augment, and FixMatch's weak and strong views."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from typing_extensions import Self

from reprlab.augment.base import CropPolicy, JitterPolicy, Probability, ViewPolicy
from reprlab.augment.ops import (
    bernoulli,
    color_jitter,
    crop_flip_resize,
    grayscale,
    per_image,
    random_solarize,
    solarize,
    to_float_nchw,
    to_uint8,
)
from reprlab.augment.randaugment import rand_augment
from reprlab.augment.spatial import blur_where, cutout, random_gaussian_blur, random_translate


def simclr_jitter(strength: float) -> tuple[float, float, float, float]:
    """SimCLR's colour jitter of strength s: brightness, contrast, saturation 0.8s, hue 0.2s."""
    return 0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength


class SimCLRPolicy(JitterPolicy):
    """SimCLR: random resized crop, horizontal flip, colour jitter with probability `jitter_p`,
    random grayscale, Gaussian blur with probability `blur_p`, then `num_ops` RandAugment ops
    (off by default; a searchable extra, as in Population Based Augmentation). A colour
    `strength` s, when given, sets the four jitter amounts to SimCLR's (0.8s, 0.8s, 0.8s, 0.2s)."""

    policy: Literal["simclr"] = "simclr"
    strength: float | None = Field(
        None, ge=0, le=1.25, description="sets brightness/contrast/saturation 0.8s, hue 0.2s"
    )
    blur_p: Probability = 0.0
    num_ops: int = Field(
        0, ge=0, le=10, description="RandAugment ops after the SimCLR transform; 0 off"
    )
    magnitude: int = Field(9, ge=0, le=30, description="RandAugment magnitude bin, 0..30")

    @model_validator(mode="after")
    def _strength_sets_jitter(self) -> Self:
        if self.strength is not None:  # in bounds: strength <= 1.25 keeps them <= 1 and 0.25
            names = ("brightness", "contrast", "saturation", "hue")
            # the model is frozen: the resolved amounts are written past its __setattr__
            self.__dict__.update(zip(names, simclr_jitter(self.strength), strict=True))
        return self

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> one SimCLR view per image, uint8 [B,C,size,size]."""
        x = random_gaussian_blur(self.jittered_crop(images, gen), self.blur_p, gen)
        return to_uint8(rand_augment(x, self.num_ops, self.magnitude, gen))


class BYOLPolicy(JitterPolicy):
    """BYOL's asymmetric views (Grill et al. 2020, table 6): crop, flip, colour jitter, grayscale,
    then Gaussian blur and solarization with different probabilities for each view."""

    policy: Literal["byol"] = "byol"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    saturation: float = Field(0.2, ge=0, le=1)
    view1_blur_p: Probability = 1.0
    view2_blur_p: Probability = 0.1
    view1_solarize_p: Probability = 0.0
    view2_solarize_p: Probability = 0.2

    def __call__(self, images: torch.Tensor, gen: torch.Generator, view: int = 1) -> torch.Tensor:
        """View `view` (1 or 2) of each image, uint8 [B,C,size,size]."""
        x = self.jittered_crop(images, gen)
        first = view == 1
        x = random_gaussian_blur(x, self.view1_blur_p if first else self.view2_blur_p, gen)
        return to_uint8(
            random_solarize(x, self.view1_solarize_p if first else self.view2_solarize_p, gen)
        )

    def view_pair(
        self, images: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """View 1 and view 2 of the same uint8 [B,H,W,C] batch."""
        return self(images, gen, view=1), self(images, gen, view=2)


class MAEPolicy(CropPolicy):
    """MAE's pretraining views: random resized crop (scale 0.2-1) and flip only."""

    policy: Literal["mae"] = "mae"

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> cropped, flipped views, uint8 [B,C,size,size]."""
        return to_uint8(self.crop(images, gen))


class RandAugmentPolicy(CropPolicy):
    """Random resized crop and flip, then RandAugment: `num_ops` ops at magnitude bin
    `magnitude` (0-30), drawn per image (augment/randaugment.py)."""

    policy: Literal["randaugment"] = "randaugment"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    num_ops: int = Field(2, ge=0, le=10)
    magnitude: int = Field(9, ge=0, le=30, description="RandAugment magnitude bin, 0..30")

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> cropped, flipped, RandAugmented views, uint8 [B,C,size,size]."""
        x = self.crop(images, gen)
        return to_uint8(rand_augment(x, self.num_ops, self.magnitude, gen))


class ThreeAugmentPolicy(CropPolicy):
    """DeiT III's 3-Augment: crop and flip, then one of grayscale, solarization or Gaussian blur
    per image (uniformly), then colour jitter of `color_jitter` (brightness, contrast,
    saturation; no hue)."""

    policy: Literal["three_augment"] = "three_augment"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    color_jitter: float = Field(0.3, ge=0, le=1)

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> 3-Augment views, uint8 [B,C,size,size]."""
        x = self.crop(images, gen)
        n, device = x.shape[0], x.device
        choice = torch.randint(3, (n,), generator=gen, device=device)
        x = torch.where(per_image(choice == 0), grayscale(x), x)
        x = torch.where(per_image(choice == 1), solarize(x), x)
        x = blur_where(x, choice == 2, gen)
        amount = self.color_jitter
        return to_uint8(color_jitter(x, amount, amount, amount, 0.0, 1.0, gen))


class FlipTranslatePolicy(ViewPolicy):
    """FixMatch's weak augmentation, the start of its weak and strong views: resize to `size`,
    flip, shift by up to `translate` of the side (whole pixels, filled by `padding_mode`)."""

    hflip_p: Probability = 0.5
    translate: float = Field(0.125, ge=0, le=0.5, description="max shift, fraction of the side")
    padding_mode: Literal["reflect", "zeros"] = "reflect"

    def weak(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> float [B,C,size,size], flipped and translated."""
        x = to_float_nchw(images)
        n, _, height, width = x.shape
        whole = torch.tensor([0.0, 0.0, height, width], device=x.device).expand(n, 4)
        flip = bernoulli(n, self.hflip_p, gen, x.device)
        x = crop_flip_resize(x, whole, flip, self.size)
        return random_translate(x, self.translate, self.padding_mode, gen)


class WeakPolicy(FlipTranslatePolicy):
    """FixMatch's weak view: resize, flip and translate only."""

    policy: Literal["weak"] = "weak"

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> flipped, shifted views, uint8 [B,C,size,size]."""
        return to_uint8(self.weak(images, gen))


class StrongPolicy(FlipTranslatePolicy):
    """FixMatch's strong view: the weak view, then RandAugment (`num_ops`, `magnitude`) and a
    gray Cutout square of side `cutout` of the image."""

    policy: Literal["strong"] = "strong"
    num_ops: int = Field(2, ge=0, le=10)
    magnitude: int = Field(10, ge=0, le=30, description="RandAugment magnitude bin, 0..30")
    cutout: float = Field(0.5, ge=0, le=1, description="Cutout square side, fraction of image")

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> weak views, RandAugmented and cut out, uint8 [B,C,size,size]."""
        x = rand_augment(self.weak(images, gen), self.num_ops, self.magnitude, gen)
        return to_uint8(cutout(x, self.cutout, gen))
