"""Batched SimCLR views: shapes, value ranges, per-image randomness, and each op against an
independent reference (torch interpolate, torchvision functional)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from reprlab.data import augment
from reprlab.data.augment import SimCLRAugment, two_views
from reprlab.data.pipeline import augment_views


def _images(n: int = 16, size: int = 12, channels: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, channels), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("channels", [1, 3])
def test_views_shape_dtype_and_range(channels: int) -> None:
    policy = SimCLRAugment(size=20)
    view1, view2 = two_views(_images(channels=channels), policy, torch.Generator().manual_seed(0))
    assert view1.shape == view2.shape == (16, channels, 20, 20)
    assert view1.dtype == torch.uint8
    assert not torch.equal(view1, view2)


def test_every_image_draws_its_own_parameters() -> None:
    same = _images(n=1).expand(32, -1, -1, -1).contiguous()
    views = SimCLRAugment(size=12)(same, torch.Generator().manual_seed(1))
    distinct = {views[i].numpy().tobytes() for i in range(32)}
    assert len(distinct) == 32


def test_same_seed_same_views() -> None:
    policy = SimCLRAugment(size=12)
    first = policy(_images(), torch.Generator().manual_seed(7))
    second = policy(_images(), torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_crop_boxes_inside_image_with_area_in_scale() -> None:
    boxes = augment.random_resized_crop_boxes(
        2000, 30, 40, (0.2, 0.6), (3 / 4, 4 / 3), torch.Generator().manual_seed(0)
    )
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 30 + 1e-4).all() and (left + w <= 40 + 1e-4).all()
    area = h * w / (30 * 40)
    assert area.min() >= 0.2 - 1e-4 and area.max() <= 0.6 + 1e-4
    assert area.std() > 0.05  # spread over the range, not one value


def test_crop_matches_interpolate_inside_the_box_and_flip_mirrors() -> None:
    x = augment.to_float_nchw(_images(n=2, size=16))
    box = torch.tensor([[2.0, 4.0, 8.0, 8.0]] * 2)
    no_flip = torch.zeros(2, dtype=torch.bool)
    out = augment.crop_flip_resize(x, box, no_flip, 16)
    reference = F.interpolate(x[:, :, 2:10, 4:12], size=16, mode="bilinear", align_corners=False)
    assert torch.allclose(out[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1], atol=1e-5)
    full = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2)
    flipped = augment.crop_flip_resize(x, full, torch.ones(2, dtype=torch.bool), 16)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-6)


def test_saturation_matches_torchvision() -> None:
    x = augment.to_float_nchw(_images(n=3))
    factors = torch.tensor([0.6, 1.0, 1.4])
    ours = torch.einsum("bij,bjhw->bihw", augment._saturation_matrices(factors), x).clamp(0, 1)
    for i, factor in enumerate(factors.tolist()):
        assert torch.allclose(ours[i], TF.adjust_saturation(x[i], factor), atol=1e-5)


def test_hue_rotation_keeps_grays_and_luma_and_inverts() -> None:
    shifts = torch.tensor([0.1, -0.1, 0.25])
    matrices = augment._hue_matrices(shifts)
    gray = torch.full((3, 1), 0.5)
    assert torch.allclose(matrices @ gray, gray.expand(3, 3, 1), atol=1e-6)
    inverse = augment._hue_matrices(-shifts)
    assert torch.allclose(inverse @ matrices, torch.eye(3).expand(3, 3, 3), atol=1e-5)
    luma = torch.tensor([0.299, 0.587, 0.114])
    assert torch.allclose(luma @ matrices, luma.expand(3, 3), atol=1e-5)


def test_jitter_off_is_identity_and_on_matches_brightness_contrast_definitions() -> None:
    x = augment.to_float_nchw(_images(n=8, channels=1))
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(augment.color_jitter(x, 0.4, 0.4, 0.4, 0.1, 0.0, generator), x)
    only_brightness = augment.color_jitter(x, 0.4, 0.0, 0.0, 0.0, 1.0, generator)
    ratio = only_brightness.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert ((ratio > 0.6 - 1e-4) & (ratio < 1.4 + 1e-4)).all()
    assert ratio.std() > 0.01  # per-image factors
    for i in range(8):
        factor = float(ratio[i])
        if factor <= 1:  # no clamping: exactly torchvision's brightness
            assert torch.allclose(only_brightness[i], TF.adjust_brightness(x[i], factor), atol=1e-5)


def test_grayscale_always_gives_equal_channels() -> None:
    x = augment.to_float_nchw(_images(n=4))
    gray = augment.random_grayscale(x, 1.0, torch.Generator().manual_seed(0))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    assert torch.allclose(gray[:, :1], TF.rgb_to_grayscale(x), atol=1e-6)


def test_augment_views_skips_corrupt_rows() -> None:
    images = _images(n=5, size=8, channels=1).numpy()
    blobs = np.array([image.tobytes() for image in images], dtype=object)
    blobs[1] = b"\x00\x01"  # truncated
    blobs[3] = None
    batch = {"image": blobs, "label": np.arange(5)}
    out = augment_views(batch, shape=(8, 8, 1), policy=SimCLRAugment(size=8))
    assert out["view1"].shape == out["view2"].shape == (3, 1, 8, 8)
    assert sorted(out["label"].tolist()) == [0, 2, 4]
