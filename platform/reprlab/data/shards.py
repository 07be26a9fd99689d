"""Parquet image shards: writing a dataset (shards plus its manifest, atomically) and reading
its rows back.

A dataset lives in ``<root>/<name>/``: ``<split>-<i:05d>.parquet`` files with columns
``image`` (raw uint8 pixels, C-order H*W*C), ``label`` (int64, -1 = unlabeled),
``class_name`` and ``split``, and a manifest describing shape, classes, counts and checksums.
Pixels are stored decoded so the training pipeline never pays for a PNG decode. Few-shot sets
add an optional ``class_split`` key (split -> its classes, pairwise disjoint).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from reprlab.data.manifest import (
    CLASS_SPLIT_KEY,
    IMAGE_FORMAT,
    MANIFEST_NAME,
    REQUIRED_KEYS,
    SCHEMA_VERSION,
    ShardError,
    class_split_problem,
    load_manifest,
    one_line,
    sha256,
    shard_paths,
)

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SPLIT_PATTERN = re.compile(r"[A-Za-z0-9_]+")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
_PIL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_SHARD_SCHEMA = pa.schema(
    [
        ("image", pa.binary()),
        ("label", pa.int64()),
        ("class_name", pa.string()),
        ("split", pa.string()),
    ]
)


# ---------------------------------------------------------------------------- writing


def write_dataset(
    root: Path,
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    splits: np.ndarray,
    *,
    source: str,
    seed: int,
    test_fraction: float,
    rows_per_shard: int = 1024,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``<root>/<name>/`` (shards + manifest) atomically and return its path.

    ``extra`` adds manifest keys (e.g. ``class_split``); it may not replace standard ones.
    Everything is written to a hidden sibling temp dir and swapped into place, so an
    interrupted write never leaves a dataset that looks whole. Same input -> same bytes.
    """
    images = _validated_images(images)
    labels, splits = _validated_rows(images, labels, class_names, splits)
    _validate_settings(name, rows_per_shard)
    extra = _validated_extra(extra or {}, labels, class_names, splits)
    root = Path(root)
    target = root / name
    _refuse_foreign_dir(target)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        staging.chmod(0o755)  # mkdtemp makes it 0700; the dataset should be shareable
        shards = _write_shards(staging, images, labels, class_names, splits, rows_per_shard)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "source": source,
            "image_shape": list(images.shape[1:]),
            "image_format": IMAGE_FORMAT,
            "seed": int(seed),
            "test_fraction": float(test_fraction),
            "classes": list(class_names),
            "splits": _split_counts(labels, class_names, splits),
            "shards": shards,
            **extra,
        }
        _write_manifest(staging, manifest)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _validated_images(images: np.ndarray) -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        dtype = getattr(images, "dtype", type(images).__name__)
        raise ValueError(f"images must be a uint8 numpy array, got {dtype}")
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[0] == 0 or 0 in images.shape[1:]:
        raise ValueError(f"images must be non-empty [N,H,W] or [N,H,W,C], got {images.shape}")
    return np.ascontiguousarray(images)


def _validated_rows(
    images: np.ndarray, labels: np.ndarray, class_names: list[str], splits: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n = images.shape[0]
    labels = np.asarray(labels)
    splits = np.asarray(splits)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}"
        )
    if splits.shape != (n,):
        raise ValueError(f"splits must have shape ({n},), got {splits.shape}")
    if not class_names or not all(isinstance(c, str) for c in class_names):
        raise ValueError("class_names must be a non-empty list of strings")
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names must be unique, got {class_names}")
    out_of_range = (labels < -1) | (labels >= len(class_names))
    if out_of_range.any():
        row = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(
            f"labels[{row}] = {labels[row]} is outside -1..{len(class_names) - 1} "
            f"({len(class_names)} classes)"
        )
    splits = splits.astype(str)
    for split in np.unique(splits).tolist():
        if not _SPLIT_PATTERN.fullmatch(split):
            raise ValueError(f"split name {split!r} must match {_SPLIT_PATTERN.pattern}")
    return labels.astype(np.int64), splits


def _validate_settings(name: str, rows_per_shard: int) -> None:
    if not _NAME_PATTERN.fullmatch(name):
        raise ValueError(f"dataset name {name!r} must match {_NAME_PATTERN.pattern}")
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")


def _validated_extra(
    extra: dict[str, Any], labels: np.ndarray, class_names: list[str], splits: np.ndarray
) -> dict[str, Any]:
    clash = sorted(set(extra) & set(REQUIRED_KEYS))
    if clash:
        raise ValueError(f"extra manifest keys {clash} would replace standard keys")
    if CLASS_SPLIT_KEY in extra:
        problem = class_split_problem(extra[CLASS_SPLIT_KEY], class_names)
        if problem:
            raise ValueError(f"extra key '{CLASS_SPLIT_KEY}': {problem}")
        _check_rows_follow_class_split(extra[CLASS_SPLIT_KEY], labels, class_names, splits)
    return extra


def _check_rows_follow_class_split(
    class_split: dict[str, list[str]],
    labels: np.ndarray,
    class_names: list[str],
    splits: np.ndarray,
) -> None:
    for split in np.unique(splits).tolist():
        members = set(class_split.get(split, []))
        allowed = np.array([name in members for name in class_names])
        split_labels = labels[splits == split]
        bad = split_labels[(split_labels < 0) | ~allowed[split_labels]]
        if bad.size:
            shown = "unlabeled" if bad[0] < 0 else repr(class_names[bad[0]])
            raise ValueError(
                f"extra key '{CLASS_SPLIT_KEY}': split '{split}' has a {shown} row, "
                f"but only classes listed under '{split}' are allowed"
            )


def _refuse_foreign_dir(target: Path) -> None:
    """Never replace something that is not a dataset: the swap deletes the old directory."""
    if not target.exists() or (target / MANIFEST_NAME).is_file():
        return
    if not target.is_dir() or any(target.iterdir()):
        raise ValueError(
            f"{target}: exists and is not a reprlab dataset (no {MANIFEST_NAME}); "
            "refusing to replace it"
        )


def _splits_in_order(splits: np.ndarray) -> list[str]:
    """Split names in order of first appearance (deterministic for a given input)."""
    names, first_rows = np.unique(splits, return_index=True)
    return [str(names[i]) for i in np.argsort(first_rows)]


def _write_shards(
    directory: Path,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    splits: np.ndarray,
    rows_per_shard: int,
) -> list[dict[str, Any]]:
    names_by_label = np.array([*class_names, ""], dtype=object)  # label -1 picks the ""
    shards = []
    for split in _splits_in_order(splits):
        rows = np.flatnonzero(splits == split)
        n_shards = -(-rows.size // rows_per_shard)
        for i, shard_rows in enumerate(np.array_split(rows, n_shards)):
            file_name = f"{split}-{i:05d}.parquet"
            table = pa.Table.from_arrays(
                [
                    _binary_column(images[shard_rows]),
                    pa.array(labels[shard_rows], type=pa.int64()),
                    pa.array(names_by_label[labels[shard_rows]], type=pa.string()),
                    pa.array([split] * shard_rows.size, type=pa.string()),
                ],
                schema=_SHARD_SCHEMA,
            )
            path = directory / file_name
            pq.write_table(table, path, compression="zstd")
            shards.append(
                {
                    "file": file_name,
                    "split": split,
                    "rows": int(shard_rows.size),
                    "sha256": sha256(path),
                }
            )
    return shards


def _binary_column(images: np.ndarray) -> pa.Array:
    """One binary value per image, built from a single buffer (no per-row Python objects)."""
    n, row_bytes = images.shape[0], int(np.prod(images.shape[1:]))
    if n * row_bytes >= 2**31:
        raise ValueError(f"a shard of {n} images would exceed 2 GiB; lower rows_per_shard")
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(row_bytes)
    data = np.ascontiguousarray(images).reshape(-1)
    return pa.BinaryArray.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _split_counts(
    labels: np.ndarray, class_names: list[str], splits: np.ndarray
) -> dict[str, dict[str, Any]]:
    counts = {}
    for split in _splits_in_order(splits):
        split_labels = labels[splits == split]
        per_class = np.bincount(split_labels[split_labels >= 0], minlength=len(class_names))
        counts[split] = {
            "count": int(split_labels.size),
            "per_class": {c: int(k) for c, k in zip(class_names, per_class, strict=True)},
        }
    return counts


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    with open(directory / MANIFEST_NAME, "w", encoding="utf-8") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename the finished staging dir to target; an old target is moved aside, then removed."""
    if not target.exists():
        os.replace(staging, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside / target.name)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(aside / target.name, target)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


# ---------------------------------------------------------------------------- reading


def decode_images(
    blobs: Sequence[bytes | None], shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Decode an ``image`` column into uint8 [ok.sum(), H, W, C] plus the per-row ``ok`` mask.

    Raw rows (exactly H*W*C bytes) decode in one ``np.frombuffer``; PNG/JPEG blobs go through
    PIL so ImageFolder-style shards work too. None, wrong-length or undecodable rows are bad.
    """
    h, w, c = (int(d) for d in shape)
    row_bytes = h * w * c
    sizes = np.fromiter(
        (-1 if b is None else len(b) for b in blobs), dtype=np.int64, count=len(blobs)
    )
    raw_rows = np.flatnonzero(sizes == row_bytes)
    raw = np.frombuffer(bytearray().join([blobs[i] for i in raw_rows]), dtype=np.uint8)
    raw = raw.reshape(raw_rows.size, row_bytes)
    encoded = _starts_like_encoded(raw)
    if encoded.any():
        raw, raw_rows, maybe_encoded = raw[~encoded], raw_rows[~encoded], raw_rows[encoded]
    else:
        maybe_encoded = raw_rows[:0]
    ok = np.zeros(sizes.size, dtype=bool)
    ok[raw_rows] = True
    candidates = np.union1d(np.flatnonzero((sizes > 0) & (sizes != row_bytes)), maybe_encoded)
    decoded = {}
    for row in candidates:
        pixels = _decode_encoded(blobs[row], (h, w, c))
        if pixels is not None:
            decoded[int(row)] = pixels
            ok[row] = True
    images = raw.reshape(raw_rows.size, h, w, c)
    if not decoded:
        return images, ok
    return _merge_rows(ok, raw_rows, images, decoded), ok


def _starts_like_encoded(raw: np.ndarray) -> np.ndarray:
    """Rows of exactly the raw length that are really PNG (signature) or JPEG (SOI + EOI)."""
    n, row_bytes = raw.shape
    is_png = _rows_match(raw[:, :8], _PNG_SIGNATURE) if row_bytes >= 8 else np.zeros(n, bool)
    if row_bytes < 5:
        return is_png
    return is_png | (_rows_match(raw[:, :3], _JPEG_START) & _rows_match(raw[:, -2:], _JPEG_END))


def _rows_match(columns: np.ndarray, signature: bytes) -> np.ndarray:
    return (columns == np.frombuffer(signature, dtype=np.uint8)).all(axis=1)


def _decode_encoded(blob: bytes, shape: tuple[int, int, int]) -> np.ndarray | None:
    """PIL-decode a PNG/JPEG blob to uint8 [H, W, C]; None when it is not one or mismatches."""
    h, w, c = shape
    head = bytes(blob[:8])
    if not (head.startswith(_PNG_SIGNATURE) or head.startswith(_JPEG_START)):
        return None
    if c not in _PIL_MODES:
        return None
    try:
        with Image.open(io.BytesIO(blob)) as image:
            pixels = np.asarray(image.convert(_PIL_MODES[c]), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    return pixels if pixels.shape == (h, w, c) else None


def _merge_rows(
    ok: np.ndarray, raw_rows: np.ndarray, raw_images: np.ndarray, decoded: dict[int, np.ndarray]
) -> np.ndarray:
    position = np.cumsum(ok) - 1  # row index -> index among the good rows
    merged = np.empty((int(ok.sum()), *raw_images.shape[1:]), dtype=np.uint8)
    merged[position[raw_rows]] = raw_images
    for row, pixels in decoded.items():
        merged[position[row]] = pixels
    return merged


def read_split(dataset_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Read a whole split as (images uint8 [n,H,W,C], labels int64 [n], bad row count).

    For evaluation and baselines; the training pipeline streams shards instead.
    """
    shape = tuple(load_manifest(dataset_dir)["image_shape"])
    image_parts, label_parts, bad_rows = [], [], 0
    for path in shard_paths(dataset_dir, split):
        blobs, labels = _read_shard_columns(path)
        images, ok = decode_images(blobs, shape)
        image_parts.append(images)
        label_parts.append(labels[ok])
        bad_rows += int((~ok).sum())
    return np.concatenate(image_parts), np.concatenate(label_parts), bad_rows


def _read_shard_columns(path: str) -> tuple[list[bytes | None], np.ndarray]:
    try:
        table = pq.read_table(path, columns=["image", "label"])
    except FileNotFoundError:
        raise ShardError(f"{path}: missing (listed in {MANIFEST_NAME}); re-ingest") from None
    except (pa.ArrowException, OSError) as e:
        raise ShardError(f"{path}: unreadable parquet ({one_line(e)})") from None
    labels = table.column("label").to_numpy(zero_copy_only=False)
    if labels.dtype.kind not in "iu":
        label_type = table.schema.field("label").type
        raise ShardError(f"{path}: column 'label' must be integers without nulls ({label_type})")
    return table.column("image").to_pylist(), labels.astype(np.int64)
