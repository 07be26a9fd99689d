"""Evaluation: weighted kNN against a brute-force implementation, linear probe sanity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprlab.eval.features import embedding_spaces
from reprlab.eval.knn import knn_accuracy
from reprlab.eval.linear_probe import linear_probe_accuracy
from reprlab.methods import Method, MethodArgs
from reprlab.methods.simclr import SimCLR, SimCLRArgs
from reprlab.models.backbones import build_backbone


def brute_force_weighted_knn(train_x, train_y, test_x, k, temperature) -> np.ndarray:
    def unit(v):
        return v / np.linalg.norm(v)

    predictions = []
    for query in test_x:
        sims = np.array([unit(query) @ unit(row) for row in train_x])
        nearest = np.argsort(-sims)[:k]
        votes: dict[int, float] = {}
        for index in nearest:
            votes[int(train_y[index])] = votes.get(int(train_y[index]), 0.0) + np.exp(
                sims[index] / temperature
            )
        predictions.append(max(votes, key=votes.get))
    return np.array(predictions)


@pytest.mark.parametrize("k,temperature", [(1, 0.07), (5, 0.5), (20, 0.07)])
def test_knn_matches_brute_force(k: int, temperature: float) -> None:
    rng = np.random.default_rng(k)
    train_x, train_y = rng.normal(size=(60, 5)), rng.integers(0, 4, 60)
    test_x, test_y = rng.normal(size=(25, 5)), rng.integers(0, 4, 25)
    expected = (brute_force_weighted_knn(train_x, train_y, test_x, k, temperature) == test_y).mean()
    assert knn_accuracy(train_x, train_y, test_x, test_y, k, temperature) == pytest.approx(expected)


def test_probes_separate_separable_classes_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=5, size=(3, 8))
    labels = rng.integers(0, 3, 300)
    features = centers[labels] + rng.normal(size=(300, 8))
    assert linear_probe_accuracy(features[:200], labels[:200], features[200:], labels[200:]) == 1.0
    assert knn_accuracy(features[:200], labels[:200], features[200:], labels[200:]) == 1.0
    noise = rng.normal(size=(300, 8))
    assert linear_probe_accuracy(noise[:200], labels[:200], noise[200:], labels[200:]) < 0.6


def test_embedding_spaces_are_the_features_and_the_losss_projection() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("conv4", 1, width=8)
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 1), dtype=np.uint8)
    contrastive = SimCLR(backbone, SimCLRArgs(proj_hidden_dim=16, proj_dim=4))
    spaces = embedding_spaces(contrastive, images, 16)
    assert set(spaces) == {"", "projection_"}
    contrastive.eval()
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        expected = contrastive.projector(contrastive.backbone(x))
    assert spaces["projection_"].shape == (6, 4)
    assert np.allclose(spaces["projection_"], expected.numpy(), atol=1e-5)
    assert np.allclose(spaces[""], contrastive.backbone(x).detach().numpy(), atol=1e-5)
    assert set(embedding_spaces(Method(backbone, MethodArgs()), images, 16)) == {""}
