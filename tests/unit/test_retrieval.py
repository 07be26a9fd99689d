"""Retrieval metrics against a brute-force implementation of their definitions and a hand-worked
example."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprlab.eval.retrieval import retrieval_metrics


def brute_force_retrieval(embeddings, labels, ks) -> dict[str, float]:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    per_query: dict[str, list[float]] = {}
    for i, query in enumerate(unit):
        others = [j for j in range(len(unit)) if j != i]
        ranked = sorted(others, key=lambda j: -(query @ unit[j]))
        rel = [int(labels[j] == labels[i]) for j in ranked]
        r = sum(rel)
        if r == 0:
            continue
        scores = {
            "precision_at_1": rel[0],
            "r_precision": sum(rel[:r]) / r,
            "map_at_r": sum(sum(rel[: n + 1]) / (n + 1) * rel[n] for n in range(r)) / r,
        }
        for k in ks:
            scores[f"recall_at_{k}"] = float(any(rel[:k]))
        for name, value in scores.items():
            per_query.setdefault(name, []).append(value)
    return {name: float(np.mean(values)) for name, values in per_query.items()}


@pytest.mark.parametrize("chunk_size", [1, 5, 1024])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_retrieval_matches_brute_force(chunk_size: int, as_tensor: bool) -> None:
    rng = np.random.default_rng(chunk_size)
    sizes = [1, 2, 3, 6, 11, 17]
    labels = rng.permutation(np.repeat([9, 4, 0, 7, 2, 5], sizes))
    embeddings = rng.normal(size=(len(labels), 6)) + 0.8 * rng.normal(size=(10, 6))[labels]
    ks = (1, 2, 4, 8, 16, 100)
    expected = brute_force_retrieval(embeddings, labels, ks)
    if as_tensor:
        embeddings, labels = torch.from_numpy(embeddings), torch.from_numpy(labels)
    metrics = retrieval_metrics(embeddings, labels, ks=ks, chunk_size=chunk_size)
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name


def on_circle(degrees: list[float]) -> np.ndarray:
    radians = np.deg2rad(np.array(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


# A line of angles: class 0 at 0, 25, 35 degrees, class 1 at 10, 65. All within 65 degrees of each
# other, so cosine similarity ranks neighbours by angular distance (no ties):
#   0 (R=2):  10(b) 25(a) 35(a) 65(b)  P@1 0, R-P 1/2, MAP@R (0 + 1/2)/2 = 1/4, hit by rank 2
#   25 (R=2): 35(a) 10(b) 0(a) 65(b)   P@1 1, R-P 1/2, MAP@R (1 + 0)/2 = 1/2,   hit by rank 1
#   35 (R=2): 25(a) 10(b) 65(b) 0(a)   P@1 1, R-P 1/2, MAP@R 1/2,               hit by rank 1
#   10 (R=1): 0(a) 25(a) 35(a) 65(b)   P@1 0, R-P 0,   MAP@R 0,                 hit by rank 4
#   65 (R=1): 35(a) 25(a) 10(b) 0(a)   P@1 0, R-P 0,   MAP@R 0,                 hit by rank 3
# Means over 5 queries: P@1 2/5, R-P 1.5/5, MAP@R 1.25/5, Recall@2 3/5, Recall@3 4/5, Recall@4 1.
LINE_DEGREES = [0.0, 25.0, 35.0, 10.0, 65.0]
LINE_LABELS = np.array([0, 0, 0, 1, 1])
LINE_EXPECTED = {
    "precision_at_1": 0.4,
    "r_precision": 0.3,
    "map_at_r": 0.25,
    "recall_at_1": 0.4,
    "recall_at_2": 0.6,
    "recall_at_3": 0.8,
    "recall_at_4": 1.0,
}


def test_hand_worked_line() -> None:
    metrics = retrieval_metrics(on_circle(LINE_DEGREES), LINE_LABELS, ks=(1, 2, 3, 4))
    assert metrics == pytest.approx(LINE_EXPECTED)


def test_singleton_classes_are_skipped() -> None:
    # at 180 degrees, the singleton is every other query's last neighbour (rank 5 > R and > 4)
    degrees, labels = [*LINE_DEGREES, 180.0], np.append(LINE_LABELS, 2)
    metrics = retrieval_metrics(on_circle(degrees), labels, ks=(1, 2, 3, 4), chunk_size=2)
    assert metrics == pytest.approx(LINE_EXPECTED)


def test_perfect_separation_scores_one() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([3, 8, 1, 5], [4, 7, 2, 9])
    embeddings = 10 * np.eye(9)[labels] + 0.1 * rng.normal(size=(len(labels), 9))
    metrics = retrieval_metrics(embeddings, labels, chunk_size=3)
    assert set(metrics) == {"precision_at_1", "r_precision", "map_at_r"} | {
        f"recall_at_{k}" for k in (1, 2, 4, 8)
    }
    assert all(value == pytest.approx(1.0) for value in metrics.values())


def test_only_singletons_and_bad_ks_are_rejected() -> None:
    with pytest.raises(ValueError, match="two items"):
        retrieval_metrics(np.eye(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="positive"):
        retrieval_metrics(np.eye(3), np.array([0, 0, 1]), ks=(0, 1))
