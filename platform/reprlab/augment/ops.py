"""Batched augmentation ops on float [B,C,H,W] batches in [0, 1], each image with its own
random parameters: byte/float conversion, crops, colour. The building blocks of the policies
in augment/policies.py (blur, translation and cutout are in augment/spatial.py).

They run on whole batches with a handful of vectorised tensor ops, so the same code serves Ray
Data's `map_batches` on CPU and a training worker's GPU. Torchvision's transforms draw one
parameter set per call (one image at a time), and kornia's batched modules spend their CPU time
in `grid_sample` and HSV round trips; the crop and colour ops below are batched matrix products
instead, which is what lets the Ray Data pipeline beat a per-sample DataLoader (see
benchmarks/data_pipeline.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

_LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    """n draws from U(low, high)."""
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def bernoulli(n: int, p: float, gen: torch.Generator, device) -> torch.Tensor:
    """n coin flips that come up True with probability p."""
    return torch.rand(n, generator=gen, device=device) < p


def per_image(values: torch.Tensor) -> torch.Tensor:
    """[B] values shaped [B,1,1,1], to broadcast over an image batch."""
    return values.view(-1, 1, 1, 1)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images of any layout -> float32 in [0, 1], same shape: the one byte-to-float
    conversion, since views and shards travel as bytes (4x less to move)."""
    return images.float().div_(255)


def float_images(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch with every uint8 entry (an image tensor) `to_float`; labels and weights as they
    are."""
    return {key: to_float(v) if v.dtype == torch.uint8 else v for key, v in batch.items()}


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,H,W,C] (shard layout) -> float [B,C,H,W] in [0, 1] (model layout)."""
    return to_float(images.permute(0, 3, 1, 2))


def resized(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """float [B,C,H,W] at image_size x image_size (antialiased bilinear), unchanged if it is."""
    if images.shape[-2:] == (image_size, image_size):
        return images
    return F.interpolate(images, size=image_size, mode="bilinear", antialias=True)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [B,C,H,W] in [0, 1] -> uint8, rounded: views travel as bytes, 4x less to move."""
    return images.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def apply_where(
    images: torch.Tensor, mask: torch.Tensor, op: Callable[..., torch.Tensor], *per_image_args
) -> torch.Tensor:
    """`op(images, *per_image_args)` on the images where `mask` is set, the rest unchanged.

    The op runs on that subset only, so an op drawn by 10% of a batch costs 10% of a pass."""
    index = mask.nonzero().squeeze(1)
    if index.numel() == 0:
        return images
    if index.numel() == images.shape[0]:
        return op(images, *per_image_args)
    subset = op(images[index], *(values[index] for values in per_image_args))
    return images.index_copy(0, index, subset)


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
    target = area * uniform(n * attempts, scale[0], scale[1], gen, device).view(n, attempts)
    log_r = uniform(n * attempts, math.log(ratio[0]), math.log(ratio[1]), gen, device)
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
    apply = bernoulli(n, p, gen, device)
    bright = uniform(n, 1 - brightness, 1 + brightness, gen, device)
    contr = uniform(n, 1 - contrast, 1 + contrast, gen, device)
    satur = uniform(n, 1 - saturation, 1 + saturation, gen, device)
    shift = uniform(n, -hue, hue, gen, device)
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
            mix = torch.where(per_image(op == 2)[..., 0], satur_m, eye)
            mix = torch.where(per_image(op == 3)[..., 0], hue_m, mix)
            x = torch.einsum("bij,bjhw->bihw", mix, x)
        x = (x * per_image(scale) + per_image(offset)).clamp_(0, 1)
    return x


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Every RGB image replaced by its luma, kept 3-channel; 1-channel images unchanged."""
    return images if images.shape[1] == 1 else rgb_to_gray(images).expand_as(images)


def random_grayscale(images: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Replace each RGB image by its luma (kept 3-channel) with probability p."""
    if images.shape[1] == 1:
        return images
    mask = per_image(bernoulli(images.shape[0], p, gen, images.device))
    return torch.where(mask, grayscale(images), images)


def solarize(images: torch.Tensor, threshold: float | torch.Tensor = 0.5) -> torch.Tensor:
    """Invert every pixel at or above `threshold` (a float, or one per image), as torchvision."""
    if isinstance(threshold, torch.Tensor):
        threshold = per_image(threshold)
    return torch.where(images >= threshold, 1 - images, images)


def random_solarize(images: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Solarize (threshold 0.5, i.e. 128 of 255) with probability p per image (BYOL)."""
    if p <= 0:
        return images
    return apply_where(images, bernoulli(images.shape[0], p, gen, images.device), solarize)
