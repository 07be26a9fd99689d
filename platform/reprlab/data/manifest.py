"""The checksummed ``manifest.json`` of an ingested dataset: loading and validating it,
verifying every shard against it, and the shard paths of a split.

The manifest records the schema version, image shape and format, classes, counts per split and
class, and a SHA-256 per shard; few-shot sets add ``class_split`` (split -> its classes,
pairwise disjoint). Every problem is a one-line ShardError naming the file and key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
IMAGE_FORMAT = "raw_uint8"
MANIFEST_NAME = "manifest.json"
CLASS_SPLIT_KEY = "class_split"
REQUIRED_KEYS = (
    "schema_version",
    "name",
    "source",
    "image_shape",
    "image_format",
    "seed",
    "test_fraction",
    "classes",
    "splits",
    "shards",
)
_SHARD_KEYS = ("file", "split", "rows", "sha256")


class ShardError(ValueError):
    """A dataset directory, manifest or shard is missing or inconsistent.

    The message is one line naming the file (and row/key where relevant) and what is wrong.
    """


def one_line(text: object) -> str:
    """`text` with its whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(str(text).split())


def class_split_problem(class_split: Any, class_names: list[str]) -> str | None:
    """Why ``class_split`` is not a {split: [class names]} map of disjoint known classes, or
    None when it is."""
    if not isinstance(class_split, dict) or not all(
        isinstance(m, list) and all(isinstance(c, str) for c in m) for m in class_split.values()
    ):
        return "must map each split name to a list of class names"
    known, owner = set(class_names), {}
    for split, members in class_split.items():
        for name in members:
            if name not in known:
                return f"split '{split}' lists unknown class {name!r}"
            if owner.setdefault(name, split) != split:
                return f"class {name!r} is in both '{owner[name]}' and '{split}'"
    return None


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(dataset_dir: Path) -> dict:
    """Read and validate ``manifest.json`` (presence, JSON, schema_version, required keys)."""
    path = Path(dataset_dir) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ShardError(f"{path}: not found (not a reprlab dataset directory?)") from None
    except OSError as e:
        raise ShardError(f"{path}: unreadable ({one_line(e.strerror or e)})") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise ShardError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    _validate_manifest(path, manifest)
    return manifest


def _validate_manifest(path: Path, manifest: Any) -> None:
    if not isinstance(manifest, dict):
        raise ShardError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(
            f"{path}: key 'schema_version' is {manifest.get('schema_version')!r}, "
            f"this reprlab reads {SCHEMA_VERSION}; re-ingest the dataset"
        )
    for key in REQUIRED_KEYS:
        if key not in manifest:
            raise ShardError(f"{path}: missing key '{key}'")
    if manifest["image_format"] != IMAGE_FORMAT:
        raise ShardError(
            f"{path}: key 'image_format' is {manifest['image_format']!r}, expected {IMAGE_FORMAT!r}"
        )
    shape = manifest["image_shape"]
    if not (
        isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(d, int) and d > 0 for d in shape)
    ):
        raise ShardError(f"{path}: key 'image_shape' must be [H, W, C] positive ints, got {shape}")
    for key, kind in (("classes", list), ("splits", dict), ("shards", list)):
        if not isinstance(manifest[key], kind):
            raise ShardError(f"{path}: key '{key}' must be a JSON {kind.__name__}")
    for split, entry in manifest["splits"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("count"), int)):
            raise ShardError(f"{path}: key 'splits.{split}' must be an object with an int 'count'")
    for i, shard in enumerate(manifest["shards"]):
        _validate_shard_entry(path, i, shard)
    if CLASS_SPLIT_KEY in manifest:
        problem = class_split_problem(manifest[CLASS_SPLIT_KEY], manifest["classes"])
        if problem:
            raise ShardError(f"{path}: key '{CLASS_SPLIT_KEY}': {problem}")


def _validate_shard_entry(path: Path, index: int, shard: Any) -> None:
    if not isinstance(shard, dict):
        raise ShardError(f"{path}: key 'shards[{index}]' must be a JSON object")
    for key in _SHARD_KEYS:
        if key not in shard:
            raise ShardError(f"{path}: missing key 'shards[{index}].{key}'")
    file_name = shard["file"]
    if (
        not isinstance(file_name, str)
        or file_name in {"", "."}
        or Path(file_name).name != file_name
    ):
        raise ShardError(f"{path}: key 'shards[{index}].file' must be a plain file name")


def verify_dataset(dataset_dir: Path) -> dict:
    """Load the manifest and check every shard exists with the recorded sha256; return it."""
    dataset_dir = Path(dataset_dir)
    manifest = load_manifest(dataset_dir)
    for shard in manifest["shards"]:
        path = dataset_dir / shard["file"]
        if not path.is_file():
            raise ShardError(f"{path}: missing (listed in {MANIFEST_NAME}); re-ingest the dataset")
        actual = sha256(path)
        if actual != shard["sha256"]:
            raise ShardError(
                f"{path}: sha256 mismatch (manifest says {shard['sha256'][:12]}.., "
                f"file has {actual[:12]}..); re-ingest the dataset"
            )
    return manifest


def shard_paths(dataset_dir: Path, split: str) -> list[str]:
    """Absolute paths of ``split``'s shards, in manifest order."""
    dataset_dir = Path(dataset_dir).resolve()
    manifest = load_manifest(dataset_dir)
    paths = [str(dataset_dir / s["file"]) for s in manifest["shards"] if s["split"] == split]
    if not paths:
        available = sorted({s["split"] for s in manifest["shards"]})
        raise ShardError(
            f"{dataset_dir / MANIFEST_NAME}: no split '{split}'; "
            f"available: {', '.join(available) or 'none'}"
        )
    return paths
