"""Blur, solarize, translate, cutout and every RandAugment op, each image with its own
parameters, against torchvision's functional ops applied one image at a time."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from reprlab.augment import ops, randaugment, spatial


def _levels(n: int = 6, channels: int = 3, height: int = 13, width: int = 17) -> torch.Tensor:
    generator = torch.Generator().manual_seed(channels)
    shape = (n, channels, height, width)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


def _per_image_reference(images: torch.Tensor, reference) -> torch.Tensor:
    return torch.stack([reference(i, image) for i, image in enumerate(images)])


def test_blur_kernel_is_a_tenth_of_the_side_and_odd() -> None:
    sizes = {8: 3, 28: 3, 32: 3, 64: 7, 96: 9, 224: 23}
    assert {size: spatial.blur_kernel_size(size) for size in sizes} == sizes


@pytest.mark.parametrize("side", [12, 40])
@pytest.mark.parametrize("channels", [1, 3])
def test_gaussian_blur_matches_torchvision_per_image_sigma(side: int, channels: int) -> None:
    x = _levels(8, channels, side, side).float() / 255
    sigma = torch.linspace(0.1, 2.0, 8)
    taps = spatial.blur_kernel_size(side)
    reference = _per_image_reference(
        x, lambda i, image: TF.gaussian_blur(image, [taps, taps], [float(sigma[i])] * 2)
    )
    assert torch.allclose(spatial.gaussian_blur(x, sigma), reference, atol=1e-5)


def test_blur_where_blurs_only_the_masked_images() -> None:
    x = _levels(4).float() / 255
    mask = torch.tensor([True, False, True, False])
    out = spatial.blur_where(x, mask, torch.Generator().manual_seed(0), sigma=(1.5, 1.5))
    assert torch.equal(out[~mask], x[~mask])
    expected = spatial.gaussian_blur(x[mask], torch.full((2,), 1.5))
    assert torch.allclose(out[mask], expected)


def test_solarize_matches_torchvision_at_128() -> None:
    levels = _levels()
    ours = ops.solarize(levels.float() / 255) * 255
    reference = TF.solarize(levels, 128).float()
    assert torch.allclose(ours, reference, atol=1e-4)
    always = ops.random_solarize(levels.float() / 255, 1.0, torch.Generator())
    assert torch.allclose(always * 255, reference, atol=1e-4)


@pytest.mark.parametrize("mode,torch_mode", [("reflect", "reflect"), ("zeros", "constant")])
def test_translate_is_torchvision_random_crop_of_the_padded_image(
    mode: str, torch_mode: str
) -> None:
    x = _levels(30, 3, 16, 16).float()
    out = spatial.random_translate(x, 0.25, mode, torch.Generator().manual_seed(0))
    padded = F.pad(x, (4, 4, 4, 4), mode=torch_mode)
    offsets = set()
    for i in range(30):
        found = [
            (top, left)
            for top in range(9)
            for left in range(9)
            if torch.equal(out[i], TF.crop(padded[i], top, left, 16, 16))
        ]
        assert found, f"image {i} is no crop of its padded original"
        offsets.add(found[0])
    assert len(offsets) > 10  # each image its own shift


def test_cutout_paints_one_clipped_gray_square_per_image() -> None:
    x = torch.zeros(200, 1, 20, 20)
    out = spatial.cutout(x, 0.5, torch.Generator().manual_seed(0))
    painted = out == 0.5
    assert torch.equal(out[~painted], x[~painted])
    rows = painted.any(dim=3).sum(dim=(1, 2))
    cols = painted.any(dim=2).sum(dim=(1, 2))
    assert (painted.sum(dim=(1, 2, 3)) == rows * cols).all()  # a rectangle
    assert rows.max() == cols.max() == 10 and rows.min() >= 5
    assert (rows < 10).any()  # clipped at the border sometimes


def _shear(axis: int):
    def reference(image: torch.Tensor, magnitude: float) -> torch.Tensor:
        degrees = math.degrees(math.atan(magnitude))
        shear = [degrees, 0.0] if axis == 0 else [0.0, degrees]
        return TF.affine(image, 0.0, [0, 0], 1.0, shear, InterpolationMode.NEAREST, None, [0, 0])

    return reference


def _translate(axis: int):
    def reference(image: torch.Tensor, magnitude: float) -> torch.Tensor:
        shift = [int(magnitude), 0] if axis == 0 else [0, int(magnitude)]
        return TF.affine(image, 0.0, shift, 1.0, [0.0, 0.0], InterpolationMode.NEAREST, None)

    return reference


# op name -> (magnitudes to try per image, torchvision reference on float images)
REFERENCES = {
    "shear_x": ([0.3, -0.3, 0.1, 0.0, -0.05, 0.25], _shear(0)),
    "shear_y": ([0.3, -0.3, 0.1, 0.0, -0.05, 0.25], _shear(1)),
    "translate_x": ([7.7, -7.7, 3.2, 0.0, -1.5, 5.0], _translate(0)),
    "translate_y": ([7.7, -7.7, 3.2, 0.0, -1.5, 5.0], _translate(1)),
    "rotate": ([30.0, -30.0, 9.0, 0.0, -14.0, 90.0], lambda x, m: TF.rotate(x, m)),
    "brightness": ([0.9, -0.9, 0.3, 0.0, -0.3, 0.6], lambda x, m: TF.adjust_brightness(x, 1 + m)),
    "color": ([0.9, -0.9, 0.3, 0.0, -0.3, 0.6], lambda x, m: TF.adjust_saturation(x, 1 + m)),
    "contrast": ([0.9, -0.9, 0.3, 0.0, -0.3, 0.6], lambda x, m: TF.adjust_contrast(x, 1 + m)),
    "sharpness": ([0.9, -0.9, 0.3, 0.0, -0.3, 0.6], lambda x, m: TF.adjust_sharpness(x, 1 + m)),
    "solarize": ([1.0, 0.5, 0.2, 0.0, 0.8, 0.33], lambda x, m: TF.solarize(x, m)),
    "autocontrast": ([0.0] * 6, lambda x, m: TF.autocontrast(x)),
}
# ops torchvision defines on uint8 images only
LEVEL_REFERENCES = {
    "posterize": ([1, 2, 4, 6, 7, 8], lambda x, m: TF.posterize(x, int(m))),
    "equalize": ([0.0] * 6, lambda x, m: TF.equalize(x)),
}


def test_every_randaugment_op_has_a_reference() -> None:
    assert set(randaugment.OPS) == {"identity", *REFERENCES, *LEVEL_REFERENCES}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("channels", [1, 3])
def test_randaugment_op_matches_torchvision(name: str, channels: int) -> None:
    magnitudes, reference = REFERENCES[name]
    x = _levels(channels=channels).float() / 255
    ours = randaugment.OPS[name].apply(x, torch.tensor(magnitudes))
    expected = _per_image_reference(x, lambda i, image: reference(image, magnitudes[i]))
    assert torch.allclose(ours, expected, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LEVEL_REFERENCES))
@pytest.mark.parametrize("channels", [1, 3])
def test_randaugment_level_op_matches_torchvision(name: str, channels: int) -> None:
    magnitudes, reference = LEVEL_REFERENCES[name]
    levels = _levels(channels=channels)
    ours = randaugment.OPS[name].apply(levels.float() / 255, torch.tensor(magnitudes))
    expected = _per_image_reference(levels, lambda i, image: reference(image, magnitudes[i]))
    assert torch.equal(ops.to_uint8(ours), expected)


def test_equalize_of_a_flat_image_is_unchanged() -> None:
    flat = torch.full((2, 3, 5, 5), 100 / 255)
    assert torch.equal(randaugment.equalize(flat), flat)


def test_magnitude_bins_are_torchvisions() -> None:
    ops = randaugment.OPS
    assert ops["rotate"].level(30, 32, 32) == pytest.approx(30.0)
    assert ops["shear_x"].level(15, 32, 32) == pytest.approx(0.15)
    assert ops["translate_x"].level(30, 20, 331) == pytest.approx(150.0)
    assert ops["translate_y"].level(30, 331, 20) == pytest.approx(150.0)
    assert [ops["posterize"].level(m, 8, 8) for m in (0, 9, 30)] == [8, 7, 4]
    assert ops["solarize"].level(0, 8, 8) == 1.0 and ops["solarize"].level(30, 8, 8) == 0.0


def test_rand_augment_draws_ops_per_image(monkeypatch: pytest.MonkeyPatch) -> None:
    counts: list[int] = []
    real = randaugment.apply_where

    def counting(images, mask, op, *args):
        counts.append(int(mask.sum()))
        return real(images, mask, op, *args)

    monkeypatch.setattr(randaugment, "apply_where", counting)
    x = _levels(n=280).float() / 255
    out = randaugment.rand_augment(x, 1, 9, torch.Generator().manual_seed(0))
    assert len(counts) == len(randaugment.OPS) - 1  # every op but identity had its subset
    assert min(counts) > 5 and 250 < sum(counts) < 280  # ~1/14 of the batch kept identity
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert torch.equal(randaugment.rand_augment(x, 0, 9, torch.Generator()), x)
