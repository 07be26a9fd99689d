"""Batch mixers: cutmix weights are the exact kept area, mixup is a convex combination, the
pipeline emits the partner's label and the weight, and the supervised loss weighs both labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reprlab.augment import MAEPolicy
from reprlab.augment.mix import beta, cutmix, mix_batch, mixup
from reprlab.data.pipeline import augment_views
from reprlab.methods.supervised import Supervised, SupervisedArgs


def _constant_images(n: int, size: int = 10) -> torch.Tensor:
    """Image i is the constant 2i, so every pixel tells which image it came from."""
    values = (2 * torch.arange(n)).to(torch.uint8)
    return values.view(n, 1, 1, 1).expand(n, 1, size, size).contiguous()


def test_cutmix_weight_is_the_exact_kept_area() -> None:
    n = 100
    images = _constant_images(n)
    partner = torch.roll(torch.arange(n), 1)
    weight = beta(n, 1.0, torch.Generator().manual_seed(0), "cpu")
    mixed, kept = cutmix(images, partner, weight, torch.Generator().manual_seed(1))
    own = (mixed == images).float().mean(dim=(1, 2, 3))
    assert torch.allclose(own, kept, atol=1e-6)
    assert ((mixed == images) | (mixed == images[partner])).all()
    assert (kept >= weight - 1e-6).all()  # the box is at most (1 - lambda) of the image
    assert (kept < 1).any() and (kept < weight + 0.05).any()  # near lambda when not clipped
    assert kept.dtype == torch.float32


def test_mixup_is_the_weighted_mean_of_image_and_partner() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 6, 6), dtype=torch.uint8, generator=generator)
    partner = torch.randperm(50, generator=generator)
    weight = torch.rand(50, generator=generator)
    mixed = mixup(images, partner, weight)
    w = weight.view(-1, 1, 1, 1)
    expected = w * images.float() + (1 - w) * images[partner].float()
    assert mixed.dtype == torch.uint8
    assert (mixed.float() - expected).abs().max() <= 0.5 + 1e-4


@pytest.mark.parametrize("mixer", ["mixup", "cutmix"])
def test_mix_batch_is_seeded_and_weights_are_in_range(mixer: str) -> None:
    images = _constant_images(64)
    first = mix_batch(images, mixer, 0.4, torch.Generator().manual_seed(3))
    again = mix_batch(images, mixer, 0.4, torch.Generator().manual_seed(3))
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    mixed, partner, weight = first
    assert sorted(partner.tolist()) == list(range(64)) and partner.dtype == torch.int64
    assert weight.dtype == torch.float32 and ((0 <= weight) & (weight <= 1)).all()
    assert weight.std() > 0.1  # one weight per image


def test_beta_draws_follow_alpha() -> None:
    concentrated = beta(4000, 50.0, torch.Generator().manual_seed(0), "cpu")
    spread = beta(4000, 0.2, torch.Generator().manual_seed(0), "cpu")
    assert (concentrated - 0.5).abs().mean() < 0.05
    assert ((spread < 0.1) | (spread > 0.9)).float().mean() > 0.6


def test_pipeline_emits_partner_label_and_weight_for_the_mixed_view() -> None:
    n = 40
    images = _constant_images(n, size=8).permute(0, 2, 3, 1).numpy()
    batch = {"image": np.array([image.tobytes() for image in images], dtype=object)}
    batch["label"] = np.arange(n)
    policy = MAEPolicy(mixer="cutmix", mix_alpha=1.0).at_size(8)
    out = augment_views(batch, shape=(8, 8, 1), policy=policy)
    assert out["label_mix"].dtype == np.int64 and out["mix_weight"].dtype == np.float32
    view1 = out["view1"]
    own = (view1 == 2 * out["label"][:, None, None, None]).mean(axis=(1, 2, 3))
    partners = (view1 == 2 * out["label_mix"][:, None, None, None]).mean(axis=(1, 2, 3))
    differ = out["label"] != out["label_mix"]
    assert np.allclose(own[differ], out["mix_weight"][differ])
    assert np.allclose((own + partners)[differ], 1.0) and differ.any()
    assert sorted(out["label_mix"].tolist()) == list(range(n))
    assert (out["view2"] == 2 * out["label"][:, None, None, None]).all()  # view 2 unmixed


class _Flat(nn.Module):
    num_features = 16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def test_supervised_mixed_loss_is_the_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    method = Supervised(_Flat(), SupervisedArgs(num_classes=4))
    batch = {
        "view1": torch.rand(6, 1, 4, 4),
        "label": torch.tensor([0, 1, 2, 3, 1, 2]),
        "label_mix": torch.tensor([3, 1, 0, 2, 2, 0]),
        "mix_weight": torch.tensor([0.2, 1.0, 0.5, 0.9, 0.0, 0.7]),
    }
    loss = method.training_step(batch)["loss"]
    log_p = torch.log_softmax(method.classifier(batch["view1"].flatten(1)), dim=1)
    rows = torch.arange(6)
    weight = batch["mix_weight"]
    by_hand = -(weight * log_p[rows, batch["label"]])
    by_hand -= (1 - weight) * log_p[rows, batch["label_mix"]]
    assert torch.allclose(loss, by_hand.mean(), atol=1e-6)
    plain = {key: batch[key] for key in ("view1", "label")}
    logits = method.classifier(batch["view1"].flatten(1))
    expected = F.cross_entropy(logits, batch["label"])
    assert torch.allclose(method.training_step(plain)["loss"], expected, atol=1e-6)


def test_supervised_mixed_loss_drops_unlabelled_terms() -> None:
    torch.manual_seed(0)
    method = Supervised(_Flat(), SupervisedArgs(num_classes=3))
    view1 = torch.rand(3, 1, 4, 4)
    batch = {
        "view1": view1,
        "label": torch.tensor([0, -1, 2]),
        "label_mix": torch.tensor([-1, 1, 1]),
        "mix_weight": torch.tensor([0.25, 0.5, 1.0]),
    }
    log_p = torch.log_softmax(method.classifier(view1.flatten(1)), dim=1)
    terms = -(0.25 * log_p[0, 0] + 0.5 * log_p[1, 1] + 1.0 * log_p[2, 2])
    expected = terms / (0.25 + 0.5 + 1.0)
    assert torch.allclose(method.training_step(batch)["loss"], expected, atol=1e-6)
