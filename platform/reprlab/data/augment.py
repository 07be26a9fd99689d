"""Batched augmentation policies: every image in a batch draws its own random parameters.

The policies run on whole uint8 batches with a handful of vectorised tensor ops, so the same
code serves Ray Data's `map_batches` on CPU and a training worker's GPU. Torchvision's
transforms draw one parameter set per call (one image at a time), and kornia's batched
modules spend their CPU time in `grid_sample` and HSV round trips; the crop and colour ops
below are batched matrix products instead, which is what lets the Ray Data pipeline beat a
per-sample DataLoader (see benchmarks/data_pipeline.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def _bernoulli(n: int, p: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) < p


def random_resized_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    gen: torch.Generator,
    device: torch.device | str = "cpu",
    attempts: int = 10,
) -> torch.Tensor:
    """Sample one crop box per image as (top, left, h, w) in pixels, as torchvision's
    RandomResizedCrop does: area fraction in `scale`, log-uniform aspect ratio in `ratio`,
    first of `attempts` draws that fits, else the whole image."""
    area = height * width
    target = area * _uniform(n * attempts, scale[0], scale[1], gen, device).view(n, attempts)
    log_r = _uniform(n * attempts, math.log(ratio[0]), math.log(ratio[1]), gen, device)
    aspect = torch.exp(log_r).view(n, attempts)
    w = torch.sqrt(target * aspect)
    h = torch.sqrt(target / aspect)
    fits = (w <= width) & (h <= height)
    first = torch.argmax(fits.int(), dim=1)
    any_fit = fits.any(dim=1)
    rows = torch.arange(n, device=device)
    h = torch.where(any_fit, h[rows, first], torch.full_like(h[:, 0], float(height)))
    w = torch.where(any_fit, w[rows, first], torch.full_like(w[:, 0], float(width)))
    top = torch.rand(n, generator=gen, device=device) * (height - h)
    left = torch.rand(n, generator=gen, device=device) * (width - w)
    return torch.stack([top, left, h, w], dim=1)


def _resize_weights(
    start: torch.Tensor, length: torch.Tensor, flip: torch.Tensor, size: int, in_size: int
) -> torch.Tensor:
    """Per-image [B,size,in_size] matrices that resample the span [start, start+length) of one
    image axis to `size` pixels: bilinear (triangle) weights, widened to antialias when
    shrinking, source coordinates clamped to the border, output reversed where `flip`."""
    centers = torch.arange(size, dtype=start.dtype, device=start.device) + 0.5
    centers = torch.where(flip[:, None], size - centers, centers)
    step = (length / size)[:, None]
    source = (start[:, None] + centers * step - 0.5).clamp(0, in_size - 1)
    support = step.clamp(min=1)[:, :, None]
    pixels = torch.arange(in_size, dtype=start.dtype, device=start.device)
    weights = (source[:, :, None] - pixels).abs_().div_(support).neg_().add_(1).clamp_(min=0)
    return weights.div_(weights.sum(dim=2, keepdim=True))


def crop_flip_resize(
    images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int
) -> torch.Tensor:
    """Crop each image of a float [B,C,H,W] batch to its box, mirror it where `flip` is set and
    resize it to size x size.

    Resampling is separable, so it is two batched matrix products with per-image weight
    matrices: several times faster on CPU than `grid_sample` (and kornia's crop, built on it)
    for small images, and it antialiases when a crop is shrunk."""
    _, _, height, width = images.shape
    top, left, h, w = boxes.to(images.dtype).unbind(dim=1)
    no_flip = torch.zeros_like(flip)
    rows = _resize_weights(top, h, no_flip, size, height)
    cols = _resize_weights(left, w, flip, size, width)
    return rows[:, None] @ images @ cols.transpose(1, 2)[:, None]


def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of a float [B,3,H,W] batch, as [B,1,H,W]."""
    r, g, b = images.unbind(dim=1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _saturation_matrices(factors: torch.Tensor) -> torch.Tensor:
    """[B,3,3] maps that blend each pixel with its luma: f*x + (1-f)*gray."""
    luma = torch.tensor(_LUMA, dtype=factors.dtype, device=factors.device)
    eye = torch.eye(3, dtype=factors.dtype, device=factors.device)
    f = factors[:, None, None]
    return f * eye + (1 - f) * luma.expand(3, 3)


def _hue_matrices(shifts: torch.Tensor) -> torch.Tensor:
    """[B,3,3] hue rotations by `shifts` turns, as a rotation of the chroma plane in YIQ space
    (the linear hue operator of NVIDIA DALI): one matrix product per image instead of an
    RGB->HSV->RGB round trip, which costs ~20x more on CPU (kornia.enhance.adjust_hue)."""
    angle = shifts * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(shifts.shape[0], 3, 3, dtype=shifts.dtype, device=shifts.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    to_yiq = _RGB_TO_YIQ.to(shifts.device, shifts.dtype)
    to_rgb = _YIQ_TO_RGB.to(shifts.device, shifts.dtype)
    return to_rgb @ rotation @ to_yiq


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def color_jitter(
    images: torch.Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """ColorJitter applied with probability p, per image: each image gets its own brightness,
    contrast, saturation and hue factors (torchvision's definitions, hue as a YIQ rotation) and
    its own random order of the four, with clamping to [0, 1] after each.

    Every adjustment is x -> M x * a + b per image, so each of the four stages is one pass over
    the batch whatever mix of adjustments its images draw."""
    n, channels, device = images.shape[0], images.shape[1], images.device
    apply = _bernoulli(n, p, gen, device)
    bright = _uniform(n, 1 - brightness, 1 + brightness, gen, device)
    contr = _uniform(n, 1 - contrast, 1 + contrast, gen, device)
    satur = _uniform(n, 1 - saturation, 1 + saturation, gen, device)
    shift = _uniform(n, -hue, hue, gen, device)
    order = torch.argsort(torch.rand(n, 4, generator=gen, device=device), dim=1)
    colour = channels == 3
    if colour:
        eye = torch.eye(3, device=device).expand(n, 3, 3)
        satur_m, hue_m = _saturation_matrices(satur), _hue_matrices(shift)
    x = images
    for stage in range(4):
        op = torch.where(apply, order[:, stage], -1)
        scale = torch.where(op == 0, bright, torch.where(op == 1, contr, 1.0))
        mean = rgb_to_gray(x).mean(dim=(1, 2, 3)) if colour else x.mean(dim=(1, 2, 3))
        offset = torch.where(op == 1, (1 - contr) * mean, 0.0)
        if colour:
            mix = torch.where(_per_image(op == 2)[..., 0], satur_m, eye)
            mix = torch.where(_per_image(op == 3)[..., 0], hue_m, mix)
            x = torch.einsum("bij,bjhw->bihw", mix, x)
        x = (x * _per_image(scale) + _per_image(offset)).clamp_(0, 1)
    return x


def random_grayscale(images: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Replace each RGB image by its luma (kept 3-channel) with probability p."""
    if images.shape[1] == 1:
        return images
    mask = _per_image(_bernoulli(images.shape[0], p, gen, images.device))
    return torch.where(mask, rgb_to_gray(images).expand_as(images), images)


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,H,W,C] -> float [B,C,H,W] in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div_(255)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [B,C,H,W] in [0, 1] -> uint8, rounded: views travel as bytes, 4x less to move."""
    return images.mul(255).round_().clamp_(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class SimCLRAugment:
    """The SimCLR view policy: random resized crop, horizontal flip, colour jitter with
    probability `jitter_p`, random grayscale."""

    size: int
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B,H,W,C] -> one augmented view per image, uint8 [B,C,size,size]."""
        x = to_float_nchw(images)
        n, _, height, width = x.shape
        boxes = random_resized_crop_boxes(
            n, height, width, self.crop_scale, self.crop_ratio, gen, x.device
        )
        x = crop_flip_resize(x, boxes, _bernoulli(n, self.hflip_p, gen, x.device), self.size)
        x = color_jitter(
            x, self.brightness, self.contrast, self.saturation, self.hue, self.jitter_p, gen
        )
        return to_uint8(random_grayscale(x, self.grayscale_p, gen))


POLICIES = {"simclr": SimCLRAugment}


def two_views(
    images: torch.Tensor, policy: SimCLRAugment, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent augmentations of the same uint8 [B,H,W,C] batch."""
    return policy(images, gen), policy(images, gen)
