"""Evaluation: weighted kNN against a brute-force implementation, linear probe sanity."""

from __future__ import annotations

import numpy as np
import pytest

from reprlab.eval.knn import knn_accuracy
from reprlab.eval.linear_probe import linear_probe_accuracy


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
