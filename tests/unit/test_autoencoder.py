"""Autoencoder: decoder sizes against conv4's own maps, masking noise, the loss against the
clean image checked by hand, and a few optimiser steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from reprlab.config import load_job
from reprlab.methods import METHODS
from reprlab.methods.autoencoder import (
    Autoencoder,
    AutoencoderArgs,
    input_channels,
    masking_noise,
    stage_sizes,
)
from reprlab.models.backbones import backbone_stages, build_backbone

from .learning import loss_before_and_after

JOBS = Path(__file__).parents[2] / "jobs"


def small_autoencoder(in_chans: int = 1, **args) -> Autoencoder:
    backbone = build_backbone("conv4", in_chans, width=8)
    return Autoencoder(backbone, AutoencoderArgs(**({"decoder_width": 8} | args)))


@pytest.mark.parametrize("size", [28, 32, 13])
def test_stage_sizes_are_the_maps_conv4_pools_to(size: int) -> None:
    x = torch.rand(1, 1, size, size)
    maps = [tuple(x.shape[-2:])]
    for stage in backbone_stages(build_backbone("conv4", 1, width=4)):
        x = stage(x)
        maps.append(tuple(x.shape[-2:]))
    assert stage_sizes((size, size), 4) == maps
    assert stage_sizes((28, 28), 4) == [(28, 28), (14, 14), (7, 7), (4, 4), (2, 2)]


@pytest.mark.parametrize("in_chans,size", [(1, 28), (3, 32), (3, 64), (1, 8)])
def test_reconstruction_has_the_input_shape_and_range(in_chans: int, size: int) -> None:
    torch.manual_seed(0)
    model = small_autoencoder(in_chans)
    images = torch.rand(2, in_chans, size, size)
    reconstruction = model.reconstruct(images)
    assert reconstruction.shape == images.shape
    assert not reconstruction.requires_grad
    assert reconstruction.min() >= 0 and reconstruction.max() <= 1


def test_input_channels_read_the_first_convolution() -> None:
    assert input_channels(build_backbone("conv4", 3)) == 3
    assert input_channels(build_backbone("vit_mini", 1, image_size=28, patch_size=4)) == 1
    with pytest.raises(ValueError, match="autoencoder: Linear has no convolution"):
        input_channels(torch.nn.Linear(2, 2))


def test_masking_noise_zeroes_whole_pixels_at_the_rate() -> None:
    torch.manual_seed(0)
    images = torch.rand(8, 3, 32, 32) + 0.1
    noisy = masking_noise(images, 0.3)
    zeroed = noisy == 0
    assert torch.equal(zeroed.all(dim=1), zeroed.any(dim=1))  # all channels of a pixel or none
    assert zeroed[:, 0].float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert torch.equal(noisy[~zeroed], images[~zeroed])
    assert torch.equal(masking_noise(images, 0.0), images)
    assert torch.equal(masking_noise(images, 1.0), torch.zeros_like(images))


def test_loss_is_the_mse_against_the_clean_image_with_full_denoising() -> None:
    torch.manual_seed(0)
    model = small_autoencoder(denoising=1.0)
    clean = torch.rand(4, 1, 28, 28)
    output = model.training_step({"view1": clean, "view2": torch.rand(4, 1, 28, 28)})
    expected = F.mse_loss(model.decoder(model.backbone(torch.zeros_like(clean)), (28, 28)), clean)
    assert set(output) == {"loss", "reconstruction_mse", "features"}
    assert output["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert output["reconstruction_mse"].item() == output["loss"].item()
    assert output["features"].shape == (4, model.backbone.num_features)
    assert not output["features"].requires_grad
    torch.testing.assert_close(output["features"], model.backbone(clean))


def test_loss_without_noise_is_the_plain_reconstruction_error() -> None:
    torch.manual_seed(0)
    model = small_autoencoder(in_chans=3)
    images = torch.rand(4, 3, 32, 32)
    output = model.training_step({"view1": images})
    code = model.backbone(images)
    expected = F.mse_loss(model.decoder(code, (32, 32)), images)
    assert output["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(output["features"], code.detach())


@pytest.mark.parametrize("denoising", [0.0, 0.25])
def test_a_few_optimiser_steps_lower_the_loss(denoising: float) -> None:
    torch.manual_seed(0)
    model = small_autoencoder(denoising=denoising)
    images = torch.rand(8, 1, 16, 16)
    images[:, :, :8] = 0.0
    before, after = loss_before_and_after(model, images, lr=3e-3)
    assert after < 0.8 * before


def test_denoising_is_a_probability() -> None:
    with pytest.raises(ValidationError, match="denoising"):
        AutoencoderArgs(denoising=1.5)


def test_job_takes_the_autoencoder_on_conv4(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "autoencoder", Autoencoder)
    overrides = ["method=autoencoder", "method_args.denoising=0.3"]
    job = load_job(JOBS / "rotation_mnist5k.yaml", overrides)
    assert job.parsed_method_args() == AutoencoderArgs(denoising=0.3)
