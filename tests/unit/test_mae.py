"""MAE: random masking, patch order, the normalised-pixel target and the masked loss against
formulas written out patch by patch, the ViT backbones, and the job-file checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reprlab.config import ConfigError, load_job
from reprlab.methods import METHODS
from reprlab.methods.mae import (
    MAE,
    MAEArgs,
    masked_patch_mse,
    norm_pix_target,
    patchify,
    random_masking,
)
from reprlab.models.backbones import build_backbone, sincos_2d_pos_embed

from .learning import loss_before_and_after

JOBS = Path(__file__).parents[2] / "jobs"


def small_mae(**args) -> MAE:
    backbone = build_backbone("vit_mini", 1, image_size=16, patch_size=4)
    defaults = {"decoder_embed_dim": 32, "decoder_depth": 1, "decoder_heads": 2}
    return MAE(backbone, MAEArgs(**(defaults | args)))


@pytest.fixture
def mae_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "mae", MAE)


@pytest.mark.parametrize(
    "length,ratio,keep", [(49, 0.75, 12), (16, 0.5, 8), (10, 0.9, 1), (10, 0.8, 2), (7, 0.3, 4)]
)
def test_random_masking_keeps_a_fixed_count_and_restores_order(
    length: int, ratio: float, keep: int
) -> None:
    torch.manual_seed(0)
    batch = 8
    x = torch.arange(length, dtype=torch.float32).view(1, length, 1).repeat(batch, 1, 3)
    visible, mask, ids_restore = random_masking(x, ratio)
    assert visible.shape == (batch, keep, 3) and mask.shape == (batch, length)
    assert torch.equal(mask.sum(1), torch.full((batch,), float(length - keep)))
    kept_ids = visible[:, :, 0].long()
    for row in range(batch):
        expected = torch.ones(length)
        expected[kept_ids[row]] = 0
        assert torch.equal(mask[row], expected)
    ids_shuffle = ids_restore.argsort(1)
    shuffled = x.gather(1, ids_shuffle.unsqueeze(-1).expand_as(x))
    assert torch.equal(shuffled[:, :keep], visible)
    assert torch.equal(shuffled.gather(1, ids_restore.unsqueeze(-1).expand_as(x)), x)
    assert len({tuple(row.tolist()) for row in mask}) > 1


def test_patchify_matches_patch_embedding_order() -> None:
    """Patch k of patchify is the patch the ViT's conv patch embedding puts at token k, and its
    pixels are ordered (row, column, channel)."""
    torch.manual_seed(0)
    backbone = build_backbone("vit_mini", 3, image_size=8, patch_size=4)
    images = torch.rand(2, 3, 8, 8)
    patches = patchify(images, 4)
    for b in range(2):
        for i in range(2):
            for j in range(2):
                block = images[b, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
                assert torch.equal(patches[b, 2 * i + j], block.permute(1, 2, 0).reshape(-1))
    proj = backbone.patch_embed.proj
    weight = proj.weight.permute(0, 2, 3, 1).reshape(proj.out_channels, -1)
    expected = patches @ weight.T + proj.bias
    assert torch.allclose(backbone.patch_embed(images), expected, atol=1e-5)


def test_norm_pix_target_matches_formula() -> None:
    rng = np.random.default_rng(0)
    patches = rng.random((3, 5, 12))
    patches[0, 0] = 0.25
    ours = norm_pix_target(torch.from_numpy(patches)).numpy()
    for b in range(3):
        for k in range(5):
            p = patches[b, k]
            expected = (p - p.mean()) / np.sqrt(p.var(ddof=1) + 1e-6)
            np.testing.assert_allclose(ours[b, k], expected, rtol=1e-9, atol=1e-12)


def test_masked_patch_mse_matches_formula() -> None:
    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(3, 6, 4)), rng.normal(size=(3, 6, 4))
    mask = (rng.random((3, 6)) < 0.6).astype(np.float64)
    mask[0, 0] = 1
    errors = [
        ((pred[b, k] - target[b, k]) ** 2).mean()
        for b in range(3)
        for k in range(6)
        if mask[b, k] == 1
    ]
    ours = masked_patch_mse(*(torch.from_numpy(a) for a in (pred, target, mask))).item()
    assert ours == pytest.approx(np.mean(errors), rel=1e-12)


def test_loss_ignores_the_prediction_at_visible_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = small_mae(mask_ratio=0.75)
    captured: dict[str, torch.Tensor] = {}
    encode, decode = model.encode_visible, model.decode

    def encode_and_keep_mask(images, ratio):
        latent, captured["mask"], ids_restore = encode(images, ratio)
        return latent, captured["mask"], ids_restore

    def decode_and_keep_grad(latent, ids_restore):
        captured["pred"] = decode(latent, ids_restore)
        captured["pred"].retain_grad()
        return captured["pred"]

    monkeypatch.setattr(model, "encode_visible", encode_and_keep_mask)
    monkeypatch.setattr(model, "decode", decode_and_keep_grad)
    model.training_step({"view1": torch.rand(4, 1, 16, 16)})["loss"].backward()
    grad, mask = captured["pred"].grad, captured["mask"]
    assert grad.shape == (4, 16, 16)
    assert torch.all(grad[mask == 0] == 0)
    assert torch.all(grad[mask == 1].abs().sum(-1) > 0)


def test_loss_unchanged_by_predictions_at_visible_patches() -> None:
    torch.manual_seed(2)
    pred, target = torch.randn(2, 9, 5), torch.randn(2, 9, 5)
    _, mask, _ = random_masking(torch.zeros(2, 9, 1), 0.6)
    changed = torch.where(mask.bool().unsqueeze(-1), pred, pred + 10 * torch.randn_like(pred))
    assert masked_patch_mse(changed, target, mask) == masked_patch_mse(pred, target, mask)


@pytest.mark.parametrize("norm", [True, False])
def test_training_step_is_the_masked_loss_of_the_decoder_output(norm: bool) -> None:
    torch.manual_seed(0)
    model = small_mae(norm_pix_loss=norm)
    images = torch.rand(2, 1, 16, 16)
    torch.manual_seed(1)
    output = model.training_step({"view1": images})
    torch.manual_seed(1)
    latent, mask, ids_restore = model.encode_visible(images, 0.75)
    target = patchify(images, 4)
    target = norm_pix_target(target) if norm else target
    expected = masked_patch_mse(model.decode(latent, ids_restore), target, mask)
    assert set(output) == {"loss", "features"}
    assert output["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(output["features"], latent[:, 0])  # the visible class token


def test_a_few_optimiser_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = small_mae()
    images = torch.rand(8, 1, 16, 16)
    images[:, :, :8] = 0.0
    before, after = loss_before_and_after(model, images, lr=1e-3)
    assert after < 0.8 * before


def test_embed_is_the_class_token_of_all_patches() -> None:
    torch.manual_seed(0)
    model = small_mae().eval()
    images = torch.rand(3, 1, 16, 16)
    features = model.embed(images)
    assert features.shape == (3, model.backbone.num_features) == (3, 128)
    assert not features.requires_grad
    assert torch.allclose(features, model.backbone.forward_features(images)[:, 0], atol=1e-6)
    assert torch.equal(model.embed(images), features)


def test_mae_rejects_a_convolutional_backbone_and_bad_args() -> None:
    with pytest.raises(ValueError, match=r"^mae: needs a ViT backbone \(vit_mini, .*got Conv4$"):
        MAE(build_backbone("conv4", 1), MAEArgs())
    with pytest.raises(ValueError, match="mask_ratio"):
        MAEArgs(mask_ratio=1.0)
    with pytest.raises(ValueError, match="decoder_embed_dim: must be a multiple of 4 \\* decod"):
        MAEArgs(decoder_embed_dim=60, decoder_heads=4)


@pytest.mark.parametrize(
    "name,size,patch,features", [("vit_mini", 28, 4, 128), ("vit_tiny", 32, 4, 192)]
)
def test_vit_backbones_pool_features_with_a_frozen_sincos_position(
    name: str, size: int, patch: int, features: int
) -> None:
    backbone = build_backbone(name, 3, image_size=size, patch_size=patch)
    assert backbone(torch.rand(2, 3, size, size)).shape == (2, features)
    assert backbone.num_features == features
    grid = size // patch
    assert not backbone.pos_embed.requires_grad
    assert torch.equal(backbone.pos_embed[0, 0], torch.zeros(features))
    assert torch.equal(backbone.pos_embed[0, 1:], sincos_2d_pos_embed(features, grid, grid))


def test_vit_backbone_needs_a_dividing_patch() -> None:
    with pytest.raises(ValueError, match="patch_size 5 must divide image_size 28"):
        build_backbone("vit_mini", 1, image_size=28, patch_size=5)


def test_sincos_position_embedding_is_distinct_per_patch() -> None:
    embed = sincos_2d_pos_embed(16, 3, 4)
    assert embed.shape == (12, 16)
    assert torch.allclose(embed[:, :4] ** 2 + embed[:, 4:8] ** 2, torch.ones(12, 4))
    assert torch.cdist(embed, embed).add(torch.eye(12)).min() > 0


def test_job_rejects_a_patch_that_does_not_divide_the_image(mae_registered) -> None:
    job = JOBS / "mae_mnist5k.yaml"
    with pytest.raises(ConfigError) as error:
        load_job(job, ["model.patch_size=5"])
    assert str(error.value) == (f"{job}: model.patch_size: must divide data.image_size (28), got 5")


def test_job_rejects_mae_on_a_convolutional_backbone(mae_registered) -> None:
    with pytest.raises(ConfigError, match=r"model.backbone: method 'mae' needs one of 'vit_mini'"):
        load_job(JOBS / "mae_mnist5k.yaml", ["model.backbone=conv4"])


def test_other_methods_accept_a_vit(mae_registered) -> None:
    job = load_job(
        JOBS / "quickstart.yaml",
        ["model.backbone=vit_mini", "model.patch_size=7", "model.width=null"],
    )
    assert job.model.patch_size == 7


@pytest.mark.parametrize("path", ["mae_mnist5k.yaml", "gpu/mae_cifar10.yaml"])
def test_mae_job_files_are_valid(path: str, mae_registered) -> None:
    job = load_job(JOBS / path)
    assert job.method == "mae" and job.model.backbone.startswith("vit")
    assert job.name == Path(path).stem
