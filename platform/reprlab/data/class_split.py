"""Class-disjoint splits (few-shot sets): rows ready for ``write_dataset`` plus the manifest keys
that record which classes belong to which split, so tools can check episodes never mix them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprlab.data.manifest import CLASS_SPLIT_KEY, class_split_problem


@dataclass(frozen=True)
class SplitRows:
    """Rows for ``write_dataset``: uint8 images, int64 labels indexing ``class_names``, each row's
    split name, and extra manifest keys (None for sets split by rows)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    splits: np.ndarray
    extra: dict[str, Any] | None = None


def split_by_class(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    class_split: Mapping[str, Sequence[str]],
    *,
    seed: int,
    extra: Mapping[str, Any] | None = None,
) -> SplitRows:
    """Order rows split by split (in ``class_split`` order), shuffled within each split with
    ``seed`` so every shard mixes classes; ``extra`` gains the ``class_split`` key.

    Every class must belong to exactly one split and have at least one row.
    """
    labels = np.asarray(labels, dtype=np.int64)
    _check_partition(class_names, class_split)
    empty = np.flatnonzero(np.bincount(labels, minlength=len(class_names)) == 0)
    if empty.size:
        names = [class_names[i] for i in empty[:5]]
        raise ValueError(f"class_split: classes without rows: {names}")
    index = {name: i for i, name in enumerate(class_names)}
    rng = np.random.default_rng(seed)
    parts, names = [], []
    for split, members in class_split.items():
        wanted = np.zeros(len(class_names), dtype=bool)
        wanted[[index[c] for c in members]] = True
        rows = np.flatnonzero(wanted[labels])
        parts.append(rng.permutation(rows))
        names.append(np.full(rows.size, split))
    order = np.concatenate(parts)
    manifest_keys = {CLASS_SPLIT_KEY: {s: list(m) for s, m in class_split.items()}, **(extra or {})}
    return SplitRows(
        images[order], labels[order], list(class_names), np.concatenate(names), manifest_keys
    )


def _check_partition(class_names: Sequence[str], class_split: Mapping[str, Sequence[str]]) -> None:
    """Every class in exactly one split, and no split names an unknown class."""
    problem = class_split_problem({s: list(m) for s, m in class_split.items()}, list(class_names))
    if problem:
        raise ValueError(f"class_split: {problem}")
    in_a_split = {name for members in class_split.values() for name in members}
    unsplit = [c for c in class_names if c not in in_a_split]
    if unsplit:
        raise ValueError(f"class_split: classes in no split: {unsplit[:5]}")
