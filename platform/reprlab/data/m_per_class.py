"""m-per-class global batches for metric learning: P classes with m images each, drawn from
(seed, epoch, batch index) alone, so any number of workers holds the same global batch, each
worker a contiguous run of whole classes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MPerClassSpec:
    """A global batch of `classes` classes (P) times `per_class` images (m), class-major."""

    classes: int
    per_class: int

    @property
    def size(self) -> int:
        return self.classes * self.per_class


def _rng(*words: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(words)))


class MPerClassSampler:
    """Seeded m-per-class batches over the labels of one split. A class with fewer than m
    images contributes each of them once before repeating any (sampling with replacement only
    past its size); a split with fewer than P classes is an error."""

    def __init__(self, labels: np.ndarray, spec: MPerClassSpec, seed: int, where: str = "split"):
        labels = np.asarray(labels)
        self.classes = np.unique(labels[labels >= 0])
        if self.classes.size < spec.classes:
            raise ValueError(
                f"{where}: {self.classes.size} classes, fewer than the {spec.classes} classes per "
                f"batch that data.batch_size / data.m_per_class asks for"
            )
        self.spec, self.seed = spec, seed
        self.rows_by_class = [np.flatnonzero(labels == c) for c in self.classes]

    def batch_rows(self, epoch: int, index: int) -> np.ndarray:
        """Row positions of global batch `index` of `epoch`: [P * m], class-major."""
        rng = _rng(self.seed, epoch, index)
        chosen = rng.choice(self.classes.size, self.spec.classes, replace=False)
        parts = []
        for c in chosen:
            rows = self.rows_by_class[c]
            m = self.spec.per_class
            picked = rng.permutation(rows)[:m]
            if picked.size < m:
                picked = np.concatenate([picked, rng.choice(rows, m - picked.size)])
            parts.append(picked)
        return np.concatenate(parts)


def worker_groups(spec: MPerClassSpec, rank: int, world: int) -> range:
    """The class groups (0..P-1, each m rows of the global batch) worker `rank` holds: a
    contiguous run of P / world of them."""
    if spec.classes % world:
        raise ValueError(
            f"{spec.classes} classes per batch do not split over {world} workers; "
            "data.batch_size / data.m_per_class must be a multiple of the worker count"
        )
    local = spec.classes // world
    return range(rank * local, (rank + 1) * local)


def group_seed(seed: int, epoch: int, index: int, group: int) -> int:
    """The augmentation seed of one class group of one global batch: the same on any worker."""
    return int(np.random.SeedSequence([seed, epoch, index, group]).generate_state(1)[0])
