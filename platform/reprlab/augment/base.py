"""What every view policy is: one frozen pydantic model whose fields are its arguments (the keys
of a job's `data.augment`, so Ray Tune can search them) and whose call is its batched transform.

A policy maps uint8 [B,H,W,C] images to uint8 [B,C,size,size] views, every image with its own
random parameters drawn from `gen` alone (a seed reproduces the views), with batched tensor ops
that run on CPU inside Ray Data's `map_batches` and on a CUDA batch with a CUDA generator alike.
The view `size` is the job's `data.image_size`, not a policy field: `at_size` sets it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from typing_extensions import Self

from reprlab.augment.ops import (
    bernoulli,
    color_jitter,
    crop_flip_resize,
    random_grayscale,
    random_resized_crop_boxes,
    to_float_nchw,
)

Probability = Annotated[float, Field(ge=0, le=1)]


class ViewPolicy(BaseModel):
    """A named view policy: `policy` names it, `mixer` is the batch mixer the pipeline applies
    to view 1 afterwards (augment/mix.py, for supervised jobs); subclasses add their own
    arguments and `__call__`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: str
    mixer: Literal["none", "mixup", "cutmix"] = Field(
        "none", description="mix view 1 within the batch (supervised jobs): label_mix, mix_weight"
    )
    mix_alpha: float = Field(1.0, gt=0, description="mixing weight ~ Beta(mix_alpha, mix_alpha)")
    _size: int | None = PrivateAttr(None)

    def at_size(self, size: int) -> Self:
        """A copy of this policy that makes size x size views (the job's data.image_size)."""
        policy = self.model_copy()
        policy._size = size
        return policy

    @property
    def size(self) -> int:
        """The side of the views, set by `at_size`."""
        if self._size is None:
            raise ValueError(f"policy {self.policy!r} has no view size; use at_size(image_size)")
        return self._size

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> one augmented view per image, uint8 [B,C,size,size]."""
        raise NotImplementedError

    def view_pair(
        self, images: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independently augmented views of the same uint8 [B,H,W,C] batch (asymmetric
        policies make the two differently)."""
        return self(images, gen), self(images, gen)


class CropPolicy(ViewPolicy):
    """A policy that starts with a random resized crop and a horizontal flip."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: Probability = 0.5

    @model_validator(mode="after")
    def _ranges_ordered(self) -> Self:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(
                f"crop_scale: must be 0 < low <= high <= 1, got {list(self.crop_scale)}"
            )
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio: must be 0 < low <= high, got {list(self.crop_ratio)}")
        return self

    def crop(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> float [B,C,size,size]: cropped, flipped, resized."""
        x = to_float_nchw(images)
        n, _, height, width = x.shape
        boxes = random_resized_crop_boxes(
            n, height, width, self.crop_scale, self.crop_ratio, gen, x.device
        )
        return crop_flip_resize(x, boxes, bernoulli(n, self.hflip_p, gen, x.device), self.size)


class JitterPolicy(CropPolicy):
    """A crop policy that then jitters colour with probability `jitter_p` (each image its own
    brightness, contrast, saturation and hue factors) and turns images gray with probability
    `grayscale_p`."""

    brightness: float = Field(0.4, ge=0, le=1)
    contrast: float = Field(0.4, ge=0, le=1)
    saturation: float = Field(0.4, ge=0, le=1)
    hue: float = Field(0.1, ge=0, le=0.5)
    jitter_p: Probability = 0.8
    grayscale_p: Probability = 0.2

    def jittered_crop(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> float [B,C,size,size]: cropped, flipped, colour-jittered, gray."""
        x = color_jitter(
            self.crop(images, gen),
            self.brightness,
            self.contrast,
            self.saturation,
            self.hue,
            self.jitter_p,
            gen,
        )
        return random_grayscale(x, self.grayscale_p, gen)
