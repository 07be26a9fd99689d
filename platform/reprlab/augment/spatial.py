"""Batched ops that move or mix neighbouring pixels, on float [B,C,H,W] batches in [0, 1],
each image with its own random parameters: Gaussian blur, whole-pixel translation, boxes and
Cutout."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reprlab.augment.ops import apply_where, bernoulli, uniform


def blur_kernel_size(size: int) -> int:
    """SimCLR's Gaussian kernel: about 10% of the image side, odd, at least 3 (23 at 224)."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own `sigma` ([B]), torchvision's kernel and reflect border.

    A separable sum of k shifted, per-image weighted copies: on CPU up to 9x faster than the
    grouped conv2d that kornia.filters.gaussian_blur2d builds for per-image sigmas (3x32x32,
    3 taps), never slower (even at 224 px, 23 taps)."""
    n, _, height, width = images.shape
    taps = blur_kernel_size(max(height, width))
    half = (taps - 1) * 0.5
    offsets = torch.linspace(-half, half, taps, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma[:, None]).pow(2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).view(n, 1, 1, 1, taps)
    pad = taps // 2
    padded = F.pad(images, (pad, pad, 0, 0), mode="reflect")
    out = padded[..., :width] * kernel[..., 0]
    for tap in range(1, taps):
        out.addcmul_(padded[..., tap : tap + width], kernel[..., tap])
    padded = F.pad(out, (0, 0, pad, pad), mode="reflect")
    out = padded[..., :height, :] * kernel[..., 0]
    for tap in range(1, taps):
        out.addcmul_(padded[..., tap : tap + height, :], kernel[..., tap])
    return out


def blur_where(
    images: torch.Tensor,
    mask: torch.Tensor,
    gen: torch.Generator,
    sigma: tuple[float, float] = (0.1, 2.0),
) -> torch.Tensor:
    """Gaussian-blur the images where `mask` is set, each with its own sigma ~ U(sigma)."""
    sigmas = uniform(images.shape[0], sigma[0], sigma[1], gen, images.device)
    return apply_where(images, mask, gaussian_blur, sigmas)


def random_gaussian_blur(images: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian blur with probability p per image, sigma ~ U(0.1, 2.0) (SimCLR, BYOL)."""
    if p <= 0:
        return images
    return blur_where(images, bernoulli(images.shape[0], p, gen, images.device), gen)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside [0, size) mirrored back in without repeating the edge (torch 'reflect')."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def random_translate(
    images: torch.Tensor, fraction: float, padding_mode: str, gen: torch.Generator
) -> torch.Tensor:
    """Shift each image by its own whole-pixel offset of up to `fraction` of its side on each
    axis, filling with the mirrored image ("reflect") or black ("zeros"): torchvision's
    RandomCrop(size, padding, padding_mode) as two batched gathers."""
    n, channels, height, width = images.shape
    device = images.device
    pad_h, pad_w = int(fraction * height + 0.5), int(fraction * width + 0.5)
    shift_y = torch.randint(-pad_h, pad_h + 1, (n, 1), generator=gen, device=device)
    shift_x = torch.randint(-pad_w, pad_w + 1, (n, 1), generator=gen, device=device)
    rows = torch.arange(height, device=device) - shift_y
    cols = torch.arange(width, device=device) - shift_x
    if padding_mode == "reflect":
        rows, cols = _reflect(rows, height), _reflect(cols, width)
        inside = None
    else:
        inside = ((rows >= 0) & (rows < height))[:, None, :, None]
        inside = inside & ((cols >= 0) & (cols < width))[:, None, None, :]
    rows = rows.clamp(0, height - 1)[:, None, :, None].expand(n, channels, height, width)
    cols = cols.clamp(0, width - 1)[:, None, None, :].expand(n, channels, height, width)
    out = images.gather(2, rows).gather(3, cols)
    return out if inside is None else out * inside


def random_boxes(
    height: int,
    width: int,
    box_h: torch.Tensor,
    box_w: torch.Tensor,
    gen: torch.Generator,
) -> torch.Tensor:
    """One box per image as a bool mask [B,1,H,W]: `box_h` x `box_w` pixels ([B] each) around
    a uniformly drawn centre, clipped to the image (so it may come out smaller)."""
    n, device = box_h.shape[0], box_h.device
    centre_y = (torch.rand(n, generator=gen, device=device) * height).long()
    centre_x = (torch.rand(n, generator=gen, device=device) * width).long()
    top, left = centre_y - box_h // 2, centre_x - box_w // 2
    rows = torch.arange(height, device=device)[None, :]
    cols = torch.arange(width, device=device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def cutout(
    images: torch.Tensor, fraction: float, gen: torch.Generator, fill: float = 0.5
) -> torch.Tensor:
    """Paint one square of side `fraction` of the image (clipped at the border) per image with
    gray, at its own random centre (FixMatch's CutoutAbs)."""
    n, _, height, width = images.shape
    side = int(fraction * min(height, width))
    if side == 0:
        return images
    sides = torch.full((n,), side, device=images.device)
    mask = random_boxes(height, width, sides, sides, gen)
    return images.masked_fill(mask, fill)
