"""Labelled subsets of a train split: which rows keep their labels when a job learns from few
labels, chosen seeded and stratified so two methods with the same seed compare on the same
labels. Rows are identified by a checksum of their pixels (shards carry no row ids)."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

import numpy as np


def row_keys(images: np.ndarray) -> np.ndarray:
    """The CRC-32 of each row's pixels (uint8 [N, ...] -> int64 [N]): a row's identity in any
    stream that carries its pixels."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.fromiter((zlib.crc32(row.data) for row in flat), dtype=np.int64, count=len(flat))


def stratified_rows(
    labels: np.ndarray,
    seed: int,
    *,
    per_class: int | None = None,
    fraction: float | None = None,
) -> np.ndarray:
    """Sorted positions of the labelled rows: `per_class` rows of every class, or `fraction`
    of each class (at least one), drawn with `seed`. ValueError naming the class when a class
    has fewer rows than asked."""
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class and fraction")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        wanted = per_class if per_class is not None else max(1, round(fraction * len(rows)))
        if wanted > len(rows):
            raise ValueError(f"class {label} has {len(rows)} rows, fewer than the {wanted} asked")
        chosen.append(rng.choice(rows, size=wanted, replace=False))
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class LabelSubset:
    """The labelled rows of a split: their positions in the split's ingest order, their pixel
    checksums (what the streams match), and a digest that names the choice."""

    positions: np.ndarray
    keys: np.ndarray

    @property
    def digest(self) -> str:
        """A short hash of the chosen rows' checksums: equal digests, equal labelled sets."""
        return hashlib.sha256(np.sort(self.keys).tobytes()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.positions)


def label_subset(
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    *,
    per_class: int | None = None,
    fraction: float | None = None,
) -> LabelSubset:
    """The seeded, stratified labelled subset of a split's rows (see `stratified_rows`).
    Rows with identical pixels would be indistinguishable in the streams, so only rows with a
    unique checksum are candidates."""
    keys = row_keys(images)
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    unique = np.sort(first[counts == 1])
    chosen = unique[stratified_rows(labels[unique], seed, per_class=per_class, fraction=fraction)]
    return LabelSubset(positions=chosen, keys=keys[chosen])
