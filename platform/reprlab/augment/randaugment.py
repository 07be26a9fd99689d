"""RandAugment (Cubuk et al. 2020) with ops drawn per image, on float [B,C,H,W] batches.

Torchvision's RandAugment and kornia.augmentation.auto.RandAugment both draw the N ops once
per call, so a whole batch shares them; here every image draws its own op and sign in each of
the N rounds, and each op then runs once on the subset of images that drew it. The op table,
magnitude bins and definitions are torchvision's (v0.29 `RandAugment`, nearest-neighbour
geometry with black fill), so each op matches `torchvision.transforms.functional`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from reprlab.augment.ops import apply_where, per_image, rgb_to_gray, solarize

NUM_BINS = 31  # magnitudes 0..30, as torchvision's num_magnitude_bins


def _inverse_affine(
    angle: torch.Tensor,
    shear_x: torch.Tensor,
    shear_y: torch.Tensor,
    translate: tuple[torch.Tensor, torch.Tensor],
    center: tuple[float, float],
) -> torch.Tensor:
    """[B,2,3] output->input maps, torchvision's `_get_inverse_affine_matrix` (scale 1) per
    image; degrees in, pixel offsets from the image centre."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    (tx, ty), (cx, cy) = translate, center
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = m0 * (-cx - tx) + m1 * (-cy - ty) + cx
    m5 = m3 * (-cx - tx) + m4 * (-cy - ty) + cy
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(-1, 2, 3)


def affine(
    images: torch.Tensor,
    *,
    angle: torch.Tensor | None = None,
    shear_x: torch.Tensor | None = None,
    shear_y: torch.Tensor | None = None,
    translate_x: torch.Tensor | None = None,
    translate_y: torch.Tensor | None = None,
    corner_center: bool = False,
) -> torch.Tensor:
    """torchvision's tensor `affine` (nearest, black fill) with per-image parameters ([B] each,
    absent = 0): one batched grid and one `grid_sample` for the whole batch."""
    n, _, height, width = images.shape
    zero = torch.zeros(n, dtype=torch.float64, device=images.device)

    def given(values: torch.Tensor | None) -> torch.Tensor:
        return zero if values is None else values.to(torch.float64)

    center = (-width * 0.5, -height * 0.5) if corner_center else (0.0, 0.0)
    theta = _inverse_affine(
        given(angle),
        given(shear_x),
        given(shear_y),
        (given(translate_x), given(translate_y)),
        center,
    ).to(images.dtype)
    xs = torch.linspace(-width * 0.5 + 0.5, width * 0.5 - 0.5, width, device=images.device)
    ys = torch.linspace(-height * 0.5 + 0.5, height * 0.5 - 0.5, height, device=images.device)
    ones = torch.ones(height, width, device=images.device)
    base = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width), ones], -1)
    base = base.view(1, height * width, 3).to(images.dtype)
    scale = torch.tensor([0.5 * width, 0.5 * height], dtype=images.dtype, device=images.device)
    grid = base.expand(n, -1, -1).bmm(theta.transpose(1, 2) / scale)
    return F.grid_sample(
        images,
        grid.view(n, height, width, 2),
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = per_image(factor)
    return (factor * images + (1 - factor) * other).clamp(0, 1)


def brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision `adjust_brightness`, one factor per image."""
    return _blend(images, torch.zeros_like(images), factor)


def color(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision `adjust_saturation` (PIL's Color); 1-channel images unchanged."""
    if images.shape[1] == 1:
        return images
    return _blend(images, rgb_to_gray(images), factor)


def contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision `adjust_contrast`: blend with the mean luma of each image."""
    luma = rgb_to_gray(images) if images.shape[1] == 3 else images
    return _blend(images, luma.mean(dim=(1, 2, 3), keepdim=True), factor)


def sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision `adjust_sharpness`: blend with PIL's smoothing filter, border kept."""
    n, channels, height, width = images.shape
    if height <= 2 or width <= 2:
        return images
    kernel = torch.ones(3, 3, dtype=images.dtype, device=images.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum())[None, None]
    smooth = F.conv2d(images.reshape(n * channels, 1, height, width), kernel)
    degenerate = images.clone()
    degenerate[..., 1:-1, 1:-1] = smooth.view(n, channels, height - 2, width - 2)
    return _blend(images, degenerate, factor)


def _levels(images: torch.Tensor) -> torch.Tensor:
    return images.mul(255).round_().clamp_(0, 255).long()


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """torchvision `posterize` on the 8-bit levels: keep the top `bits` of each pixel."""
    drop = per_image(8 - bits.long())
    return ((_levels(images) >> drop) << drop).to(images.dtype) / 255


def autocontrast(images: torch.Tensor, _: torch.Tensor | None = None) -> torch.Tensor:
    """torchvision `autocontrast`: stretch each channel to [0, 1]; flat channels unchanged."""
    low = images.amin(dim=(-2, -1), keepdim=True)
    high = images.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    scale = torch.where(flat, 1.0, 1 / (high - low).masked_fill(flat, 1))
    return ((images - low.masked_fill(flat, 0)) * scale).clamp(0, 1)


def equalize(images: torch.Tensor, _: torch.Tensor | None = None) -> torch.Tensor:
    """torchvision `equalize` (PIL's) on the 8-bit levels, one histogram per image channel."""
    n, channels, height, width = images.shape
    levels = _levels(images).view(n * channels, height * width)
    hist = torch.zeros(n * channels, 256, dtype=torch.long, device=images.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels))
    top = hist.gather(1, levels.amax(dim=1, keepdim=True))  # count of the last non-empty bin
    step = (height * width - top) // 255
    lut = (hist.cumsum(dim=1) + step // 2) // step.clamp(min=1)
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    out = torch.where(step == 0, levels, lut.gather(1, levels))
    return out.view(n, channels, height, width).to(images.dtype) / 255


def _signed_bins(high: float) -> Callable[[int, int, int], float]:
    return lambda magnitude, height, width: float(torch.linspace(0, high, NUM_BINS)[magnitude])


def _translate_bins(axis: int) -> Callable[[int, int, int], float]:
    def level(magnitude: int, height: int, width: int) -> float:
        side = (height, width)[axis]
        return float(torch.linspace(0, 150 / 331 * side, NUM_BINS)[magnitude])

    return level


def _posterize_bins(magnitude: int, height: int, width: int) -> float:
    return float(8 - round(magnitude / ((NUM_BINS - 1) / 4)))


def _solarize_bins(magnitude: int, height: int, width: int) -> float:
    return float(torch.linspace(255, 0, NUM_BINS)[magnitude]) / 255


def _shear(axis: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def op(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        degrees = torch.rad2deg(torch.atan(magnitude.double()))
        key = ("shear_x", "shear_y")[axis]
        return affine(images, **{key: degrees}, corner_center=True)

    return op


def _translate(axis: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def op(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        key = ("translate_x", "translate_y")[axis]
        return affine(images, **{key: magnitude.trunc()})

    return op


def _rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    return affine(images, angle=-degrees)  # torchvision's rotate negates the affine angle


def _plus_one(op: Callable) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda images, magnitude: op(images, 1 + magnitude)


class Op(NamedTuple):
    """One RandAugment op: its magnitude at bin M for an H x W image, whether that magnitude
    gets a random sign, and the batched op(images, per-image magnitudes) (None: identity)."""

    level: Callable[[int, int, int], float]
    signed: bool
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None


def _no_level(magnitude: int, height: int, width: int) -> float:
    return 0.0


OPS: dict[str, Op] = {
    "identity": Op(_no_level, False, None),
    "shear_x": Op(_signed_bins(0.3), True, _shear(0)),
    "shear_y": Op(_signed_bins(0.3), True, _shear(1)),
    "translate_x": Op(_translate_bins(1), True, _translate(0)),
    "translate_y": Op(_translate_bins(0), True, _translate(1)),
    "rotate": Op(_signed_bins(30.0), True, _rotate),
    "brightness": Op(_signed_bins(0.9), True, _plus_one(brightness)),
    "color": Op(_signed_bins(0.9), True, _plus_one(color)),
    "contrast": Op(_signed_bins(0.9), True, _plus_one(contrast)),
    "sharpness": Op(_signed_bins(0.9), True, _plus_one(sharpness)),
    "posterize": Op(_posterize_bins, False, posterize),
    "solarize": Op(_solarize_bins, False, solarize),
    "autocontrast": Op(_no_level, False, autocontrast),
    "equalize": Op(_no_level, False, equalize),
}


def rand_augment(
    images: torch.Tensor, num_ops: int, magnitude: int, gen: torch.Generator
) -> torch.Tensor:
    """`num_ops` rounds; in each, every image draws one of OPS (uniformly, with replacement
    across rounds) and a sign, and gets it at magnitude bin `magnitude` (0..30)."""
    n, _, height, width = images.shape
    device = images.device
    for _ in range(num_ops):
        drawn = torch.randint(len(OPS), (n,), generator=gen, device=device)
        sign = torch.where(torch.rand(n, generator=gen, device=device) < 0.5, -1.0, 1.0)
        for index, op in enumerate(OPS.values()):
            if op.apply is None:
                continue
            value = op.level(magnitude, height, width)
            values = sign * value if op.signed else torch.full((n,), value, device=device)
            images = apply_where(images, drawn == index, op.apply, values)
    return images
