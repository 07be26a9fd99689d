"""Batched view policies and their crop/colour ops: shapes, value ranges, per-image randomness,
seeding, each op against an independent reference (torch interpolate, torchvision functional),
and the asymmetries that define BYOL and 3-Augment."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from reprlab.augment import (
    POLICIES,
    BYOLPolicy,
    MAEPolicy,
    SimCLRPolicy,
    ThreeAugmentPolicy,
    WeakPolicy,
    ops,
    spatial,
)
from reprlab.data.pipeline import augment_views, block_groups
from reprlab.tracking.figures import view_pairs_figure


def _images(n: int = 16, size: int = 12, channels: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, channels), dtype=torch.uint8, generator=generator)


def _bright_images(n: int, size: int = 12, channels: int = 3) -> torch.Tensor:
    """Pixels in 128..255: solarizing one turns all of them below 128, nothing else does."""
    return _images(n, size, channels) // 2 + 128


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("channels", [1, 3])
def test_views_shape_dtype_and_range(name: str, channels: int) -> None:
    policy = POLICIES[name]().at_size(20)
    images = _images(channels=channels)
    view1, view2 = policy.view_pair(images, torch.Generator().manual_seed(0))
    assert view1.shape == view2.shape == (16, channels, 20, 20)
    assert view1.dtype == view2.dtype == torch.uint8
    assert not torch.equal(view1, view2)
    assert view1.float().std() > 10  # still images, not a constant


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_image_draws_its_own_parameters(name: str) -> None:
    same = _images(n=1, size=24).expand(32, -1, -1, -1).contiguous()
    view1, _ = POLICIES[name]().at_size(24).view_pair(same, torch.Generator().manual_seed(1))
    distinct = {view1[i].numpy().tobytes() for i in range(32)}
    # weak views have 98 possible outcomes (7 x 7 shifts, flip or not): repeats are expected
    assert len(distinct) >= (16 if name == "weak" else 32)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_same_seed_same_views(name: str) -> None:
    policy = POLICIES[name]().at_size(12)
    first = policy.view_pair(_images(), torch.Generator().manual_seed(7))
    second = policy.view_pair(_images(), torch.Generator().manual_seed(7))
    other = policy.view_pair(_images(), torch.Generator().manual_seed(8))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(POLICIES))
def test_views_on_a_cuda_batch(name: str) -> None:
    generator = torch.Generator(device="cuda").manual_seed(0)
    view1, view2 = POLICIES[name]().at_size(16).view_pair(_images().cuda(), generator)
    assert view1.device.type == view2.device.type == "cuda"
    assert view1.shape == (16, 3, 16, 16) and view1.dtype == torch.uint8


def test_simclr_strength_sets_the_jitter_and_blur_p_blurs() -> None:
    policy = SimCLRPolicy(strength=0.5)
    assert (policy.brightness, policy.contrast, policy.saturation, policy.hue) == (
        0.4,
        0.4,
        0.4,
        0.1,
    )
    strong = SimCLRPolicy(brightness=0.1, strength=1.0)
    assert strong.brightness == pytest.approx(0.8) and strong.hue == pytest.approx(0.2)
    plain = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0, jitter_p=0.0)
    images = _images(n=8, size=30)
    sharp = SimCLRPolicy(grayscale_p=0.0, **plain).at_size(30)(images, torch.Generator())
    assert torch.equal(sharp, images.permute(0, 3, 1, 2))
    blurred = SimCLRPolicy(grayscale_p=0.0, blur_p=1.0, **plain).at_size(30)(
        images, torch.Generator().manual_seed(0)
    )
    assert blurred.float().diff(dim=-1).abs().mean() < sharp.float().diff(dim=-1).abs().mean()


def test_simclr_rand_augment_is_off_by_default_and_changes_views_when_on() -> None:
    images = _images(n=32, size=16)

    def views(policy: SimCLRPolicy) -> torch.Tensor:
        return policy.at_size(16)(images, torch.Generator().manual_seed(3))

    default = SimCLRPolicy(blur_p=0.5)
    before = default.at_size(16)  # the transform as it was before num_ops existed
    gen = torch.Generator().manual_seed(3)
    previous = ops.to_uint8(
        spatial.random_gaussian_blur(before.jittered_crop(images, gen), before.blur_p, gen)
    )
    assert torch.equal(views(default), previous)
    assert torch.equal(views(SimCLRPolicy(blur_p=0.5, num_ops=0, magnitude=30)), previous)
    augmented = views(SimCLRPolicy(blur_p=0.5, num_ops=2, magnitude=15))
    assert augmented.shape == previous.shape and augmented.dtype == torch.uint8
    changed = (augmented != previous).flatten(1).any(dim=1)
    assert changed.float().mean() > 0.5


def test_byol_blurs_every_first_view_and_solarizes_a_fifth_of_second_views(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blurred: list[int] = []
    real_blur = spatial.gaussian_blur

    def counting_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        blurred.append(images.shape[0])
        return real_blur(images, sigma)

    monkeypatch.setattr(spatial, "gaussian_blur", counting_blur)
    n = 2000
    policy = BYOLPolicy(jitter_p=0.0, grayscale_p=0.0).at_size(12)
    view1, view2 = policy.view_pair(_bright_images(n), torch.Generator().manual_seed(0))
    first_blurred, second_blurred = blurred
    assert first_blurred == n
    assert 0.07 < second_blurred / n < 0.13
    solarized = (view2.amax(dim=(1, 2, 3)) <= 127).float()
    assert (view1.amin(dim=(1, 2, 3)) >= 128).all()
    assert ((view2.amin(dim=(1, 2, 3)) >= 128).float() + solarized == 1).all()
    assert 0.16 < solarized.mean() < 0.24


def test_three_augment_applies_exactly_one_of_gray_solarize_blur_per_image() -> None:
    n = 1500
    images = _bright_images(n)
    images[..., 0] = 255  # every image coloured: grayscale makes its channels equal
    square = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    policy = ThreeAugmentPolicy(color_jitter=0, **square).at_size(12)
    view = policy(images, torch.Generator().manual_seed(0))
    gray = (view[:, 0] == view[:, 1]).all(dim=(1, 2)) & (view[:, 1] == view[:, 2]).all(dim=(1, 2))
    solarized = view.amax(dim=(1, 2, 3)) <= 127
    assert not (gray & solarized).any()
    blurred = ~gray & ~solarized
    for share in (gray, solarized, blurred):
        assert 0.28 < share.float().mean() < 0.39


def test_mae_is_crop_and_flip_only() -> None:
    images = _images(n=4, size=16)
    square = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    identity = MAEPolicy(hflip_p=0.0, **square).at_size(16)
    assert torch.equal(identity(images, torch.Generator()), images.permute(0, 3, 1, 2))
    flipped = MAEPolicy(hflip_p=1.0, **square).at_size(16)
    assert torch.equal(flipped(images, torch.Generator()), images.permute(0, 3, 1, 2).flip(-1))


def test_weak_view_is_a_shift_of_the_image() -> None:
    images = _images(n=20, size=16)
    views = WeakPolicy(hflip_p=0.0, translate=0.25, padding_mode="zeros").at_size(16)(
        images, torch.Generator().manual_seed(0)
    )
    padded = F.pad(images.permute(0, 3, 1, 2), (4, 4, 4, 4))
    for i in range(20):
        shifts = [
            (top, left)
            for top in range(9)
            for left in range(9)
            if torch.equal(views[i], padded[i, :, top : top + 16, left : left + 16])
        ]
        assert shifts, f"image {i} is no shift of its original"


def test_crop_boxes_inside_image_with_area_in_scale() -> None:
    boxes = ops.random_resized_crop_boxes(
        2000, 30, 40, (0.2, 0.6), (3 / 4, 4 / 3), torch.Generator().manual_seed(0)
    )
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 30 + 1e-4).all() and (left + w <= 40 + 1e-4).all()
    area = h * w / (30 * 40)
    assert area.min() >= 0.2 - 1e-4 and area.max() <= 0.6 + 1e-4
    assert area.std() > 0.05  # spread over the range, not one value


def test_crop_matches_interpolate_inside_the_box_and_flip_mirrors() -> None:
    x = ops.to_float_nchw(_images(n=2, size=16))
    box = torch.tensor([[2.0, 4.0, 8.0, 8.0]] * 2)
    no_flip = torch.zeros(2, dtype=torch.bool)
    out = ops.crop_flip_resize(x, box, no_flip, 16)
    reference = F.interpolate(x[:, :, 2:10, 4:12], size=16, mode="bilinear", align_corners=False)
    assert torch.allclose(out[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1], atol=1e-5)
    full = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2)
    flipped = ops.crop_flip_resize(x, full, torch.ones(2, dtype=torch.bool), 16)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-6)


def test_saturation_matches_torchvision() -> None:
    x = ops.to_float_nchw(_images(n=3))
    factors = torch.tensor([0.6, 1.0, 1.4])
    matrices = ops._saturation_matrices(factors)
    ours = torch.einsum("bij,bjhw->bihw", matrices, x).clamp(0, 1)
    for i, factor in enumerate(factors.tolist()):
        assert torch.allclose(ours[i], TF.adjust_saturation(x[i], factor), atol=1e-5)


def test_hue_rotation_keeps_grays_and_luma_and_inverts() -> None:
    shifts = torch.tensor([0.1, -0.1, 0.25])
    matrices = ops._hue_matrices(shifts)
    gray = torch.full((3, 1), 0.5)
    assert torch.allclose(matrices @ gray, gray.expand(3, 3, 1), atol=1e-6)
    inverse = ops._hue_matrices(-shifts)
    assert torch.allclose(inverse @ matrices, torch.eye(3).expand(3, 3, 3), atol=1e-5)
    luma = torch.tensor([0.299, 0.587, 0.114])
    assert torch.allclose(luma @ matrices, luma.expand(3, 3), atol=1e-5)


def test_jitter_off_is_identity_and_on_matches_brightness_contrast_definitions() -> None:
    x = ops.to_float_nchw(_images(n=8, channels=1))
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(ops.color_jitter(x, 0.4, 0.4, 0.4, 0.1, 0.0, generator), x)
    only_brightness = ops.color_jitter(x, 0.4, 0.0, 0.0, 0.0, 1.0, generator)
    ratio = only_brightness.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert ((ratio > 0.6 - 1e-4) & (ratio < 1.4 + 1e-4)).all()
    assert ratio.std() > 0.01  # per-image factors
    for i in range(8):
        factor = float(ratio[i])
        if factor <= 1:  # no clamping: exactly torchvision's brightness
            assert torch.allclose(only_brightness[i], TF.adjust_brightness(x[i], factor), atol=1e-5)


def test_grayscale_always_gives_equal_channels() -> None:
    x = ops.to_float_nchw(_images(n=4))
    gray = ops.random_grayscale(x, 1.0, torch.Generator().manual_seed(0))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    assert torch.allclose(gray[:, :1], TF.rgb_to_grayscale(x), atol=1e-6)


def test_augment_views_skips_corrupt_rows() -> None:
    images = _images(n=5, size=8, channels=1).numpy()
    blobs = np.array([image.tobytes() for image in images], dtype=object)
    blobs[1] = b"\x00\x01"  # truncated
    blobs[3] = None
    batch = {"image": blobs, "label": np.arange(5)}
    out = augment_views(batch, shape=(8, 8, 1), policy=SimCLRPolicy().at_size(8))
    assert out["view1"].shape == out["view2"].shape == (3, 1, 8, 8)
    assert sorted(out["label"].tolist()) == [0, 2, 4]
    assert "label_mix" not in out and "mix_weight" not in out


def test_block_groups_cover_every_block_once_and_regroup_each_epoch() -> None:
    """The schedule's augmentation batches: each epoch takes every cached block exactly once,
    BLOCKS_PER_MAP_BATCH at a time, in an order fixed by (seed, epoch)."""
    epochs = [block_groups(10, seed=0, epoch=epoch) for epoch in range(3)]
    for groups in epochs:
        assert [len(group) for group in groups] == [4, 4, 2]
        assert sorted(np.concatenate(groups).tolist()) == list(range(10))
    firsts = {frozenset(groups[0].tolist()) for groups in epochs}
    assert len(firsts) == 3
    again = block_groups(10, seed=0, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(again, epochs[1], strict=True))
    assert not np.array_equal(block_groups(10, seed=1, epoch=1)[0], epochs[1][0])


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_view_pairs_figure_for_every_policy(name: str) -> None:
    originals = _images(n=3, size=16, channels=1)
    policy = POLICIES[name]().at_size(16)
    view1, view2 = policy.view_pair(originals, torch.Generator().manual_seed(0))
    figure = view_pairs_figure(
        originals.numpy(), view1.permute(0, 2, 3, 1).numpy(), view2.permute(0, 2, 3, 1).numpy()
    )
    assert len(figure.axes) == 9


def test_a_policy_gets_its_view_size_from_the_job_not_its_fields() -> None:
    policy = SimCLRPolicy()
    with pytest.raises(ValueError, match="no view size; use at_size"):
        policy(_images(n=2), torch.Generator())
    sized = policy.at_size(20)
    assert sized.size == 20 and policy._size is None
    assert sized != policy and sized == SimCLRPolicy().at_size(20)
    assert "size" not in sized.model_dump()


def test_a_sized_policy_survives_pickling_for_ray_tasks() -> None:
    policy = BYOLPolicy(view2_solarize_p=0.5).at_size(14)
    restored = pickle.loads(pickle.dumps(policy))
    assert restored == policy and restored.size == 14
    images = _images(n=4)
    expected = policy.view_pair(images, torch.Generator().manual_seed(2))
    again = restored.view_pair(images, torch.Generator().manual_seed(2))
    assert all(torch.equal(a, b) for a, b in zip(expected, again, strict=True))


def test_to_float_converts_any_layout_and_to_float_nchw_moves_channels() -> None:
    images = _images(n=2, size=5)
    floats = ops.to_float(images)
    assert floats.dtype == torch.float32 and floats.shape == images.shape
    assert torch.equal(floats * 255, images.float())
    assert torch.equal(ops.to_float_nchw(images), floats.permute(0, 3, 1, 2))
    episodes = torch.randint(0, 256, (2, 3, 1, 4, 4), dtype=torch.uint8)
    assert torch.equal(ops.to_uint8(ops.to_float(episodes)), episodes)
