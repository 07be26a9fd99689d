"""How hard the glyphs few-shot set is without learning: nearest class mean on raw pixels.

    .venv/bin/python benchmarks/glyphs_difficulty.py [--dataset glyphs] [--split test]

Samples N-way K-shot episodes from one split's classes (default 600 episodes, 5-way, 15
queries per class), classifies each query by Euclidean distance to the mean of its class's
support pixels, and prints 1-shot and 5-shot accuracy with a 95 % CI (1.96 std / sqrt(n)).
The set is meant to sit near Omniglot's: about 55-63 % 1-shot on the test split.
"""

from __future__ import annotations

import argparse

import numpy as np

from reprlab.data.catalog import ingest, resolve_dataset
from reprlab.data.shards import read_split


def episode_accuracies(
    by_class: np.ndarray, ways: int, shots: int, queries: int, episodes: int, seed: int
) -> np.ndarray:
    """Per-episode raw-pixel nearest-class-mean accuracy; ``by_class`` is [classes, n, pixels]."""
    rng = np.random.default_rng(seed)
    n_classes, per_class, _ = by_class.shape
    truth = np.repeat(np.arange(ways), queries)
    accuracies = np.empty(episodes)
    for e in range(episodes):
        classes = rng.choice(n_classes, ways, replace=False)
        picks = np.stack([rng.permutation(per_class)[: shots + queries] for _ in classes])
        chosen = by_class[classes[:, None], picks]  # [ways, shots + queries, pixels]
        means = chosen[:, :shots].mean(axis=1)
        query = chosen[:, shots:].reshape(ways * queries, -1)
        distances = ((query[:, None, :] - means[None]) ** 2).sum(axis=-1)
        accuracies[e] = (distances.argmin(axis=1) == truth).mean()
    return accuracies


def split_by_class(dataset_dir, split: str) -> np.ndarray:
    """A split's images as float32 [classes, samples per class, pixels] (equal counts)."""
    images, labels, _ = read_split(dataset_dir, split)
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() != counts.max():
        raise SystemExit(f"{split}: classes have {counts.min()}..{counts.max()} images, not equal")
    order = np.argsort(labels, kind="stable")
    return images[order].reshape(classes.size, counts[0], -1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="glyphs")
    parser.add_argument("--split", default="test")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.dataset == "glyphs":
        ingest("glyphs")  # a no-op when an identical copy exists
    by_class = split_by_class(resolve_dataset(args.dataset), args.split)
    print(f"{args.dataset}/{args.split}: {by_class.shape[0]} classes x {by_class.shape[1]}")
    for shots in (1, 5):
        acc = episode_accuracies(by_class, args.ways, shots, args.queries, args.episodes, args.seed)
        ci = 1.96 * acc.std() / np.sqrt(acc.size)
        print(
            f"raw-pixel NCM {args.ways}-way {shots}-shot: {100 * acc.mean():.1f} % "
            f"+- {100 * ci:.1f} ({acc.size} episodes, {args.queries} queries/class)"
        )


if __name__ == "__main__":
    main()
