"""Clustering evaluation: Hungarian-matched accuracy on known labellings, k-means on blobs and
noise."""

from __future__ import annotations

import numpy as np
import pytest

from reprlab.eval.clustering import clustering_accuracy, clustering_metrics


def test_permuted_labelling_is_fully_accurate() -> None:
    labels = np.random.default_rng(0).integers(0, 5, 50)
    permutation = np.array([3, 0, 4, 1, 2])
    assert clustering_accuracy(labels, permutation[labels]) == 1.0


def test_one_mistake_costs_one_item() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    clusters = np.array([2, 2, 2, 0, 0, 1, 1, 1, 1, 1])  # item 5 (label 1) joins label 2's cluster
    assert clustering_accuracy(labels, clusters) == 9 / 10


def test_arbitrary_ids_and_unequal_counts() -> None:
    # clusters 100 -> label 7 (2 items) and 5 -> label 42 (2 items); the -3 item is unmatched
    labels = np.array([7, 7, 42, 42, -3])
    clusters = np.array([100, 100, 5, 5, 5])
    assert clustering_accuracy(labels, clusters) == 4 / 5
    with pytest.raises(ValueError, match="cluster ids"):
        clustering_accuracy(labels, clusters[:4])


def blobs(rng: np.random.Generator, ids: list[int], scale: float) -> tuple[np.ndarray, np.ndarray]:
    index = rng.permutation(np.repeat(np.arange(len(ids)), 40))
    centers = scale * rng.normal(size=(len(ids), 16))
    return centers[index] + rng.normal(size=(len(index), 16)), np.array(ids)[index]


def test_separated_blobs_are_recovered() -> None:
    embeddings, labels = blobs(np.random.default_rng(0), [11, 3, 250, 7], scale=10.0)
    metrics = clustering_metrics(embeddings, labels, seed=0)
    assert metrics == pytest.approx({"acc": 1.0, "nmi": 1.0, "ari": 1.0})


def test_noise_does_not_cluster() -> None:
    rng = np.random.default_rng(1)
    embeddings, labels = rng.normal(size=(300, 16)), rng.integers(0, 3, 300)
    assert abs(clustering_metrics(embeddings, labels, seed=0)["ari"]) < 0.05


def test_normalisation_discards_the_norm() -> None:
    # two classes along one direction, told apart only by their norm
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 50)
    embeddings = (1.0 + 9.0 * labels)[:, None] * np.ones(8) + 0.05 * rng.normal(size=(100, 8))
    assert clustering_metrics(embeddings, labels, seed=0, normalize=False)["ari"] == 1.0
    assert clustering_metrics(embeddings, labels, seed=0)["ari"] < 0.2
