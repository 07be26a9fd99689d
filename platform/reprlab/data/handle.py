"""A dataset resolved and verified once: its folder, its manifest and the splits read from it.

A run opens its dataset before Ray starts (every shard hashed once) and hands this typed handle
to every later phase (Ray Data sources, figures, evaluation), instead of each of them loading
the manifest and rereading shards by path."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reprlab.data.catalog import EMBEDDED, ingest, resolve_dataset
from reprlab.data.manifest import MANIFEST_NAME, ShardError, shard_paths, verify_dataset
from reprlab.data.remote import local_copy
from reprlab.data.shards import read_split
from reprlab.storage import is_remote


@dataclass(frozen=True)
class DatasetHandle:
    """An ingested dataset: `path`, its verified `manifest`, and the splits read so far (kept in
    memory for this process; a handle sent to a Ray worker arrives without them)."""

    path: Path
    manifest: dict
    source: str | None = None
    """The object-store URI the dataset lives at, when `path` is a local copy of it."""
    _splits: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(cls, name_or_path: str) -> DatasetHandle:
        """Resolve a dataset name, folder or object-store URI (s3://..., copied locally) and
        verify every shard's checksum; ValueError (one line) when it is not ingested or a shard
        is damaged."""
        if is_remote(name_or_path):
            uri = name_or_path.rstrip("/")
            path, manifest = local_copy(uri)
            return cls(path, manifest, source=uri)
        path = resolve_dataset(name_or_path)
        return cls(path, verify_dataset(path))

    @classmethod
    def open_or_ingest(cls, name: str) -> DatasetHandle:
        """`open`, ingesting an embedded set first when it is not there yet (benchmarks)."""
        if name in EMBEDDED:
            ingest(name)  # idempotent: returns at once when an identical copy exists
        return cls.open(name)

    def __getstate__(self) -> dict:
        return {"path": self.path, "manifest": self.manifest, "source": self.source, "_splits": {}}

    def __setstate__(self, state: dict) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def digest(self) -> str:
        """A 16-hex-digit fingerprint of the data: SHA-256 over every shard's file, split and
        checksum in the manifest, so any changed shard or re-split gives another digest."""
        entries = sorted((s["file"], s["split"], s["sha256"]) for s in self.manifest["shards"])
        text = "\n".join(" ".join(entry) for entry in entries)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the stored images."""
        height, width, channels = self.manifest["image_shape"]
        return height, width, channels

    @property
    def in_chans(self) -> int:
        return self.image_shape[2]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    @property
    def splits_classes(self) -> bool:
        """Whether train/val/test hold disjoint classes (few-shot sets)."""
        return "class_split" in self.manifest

    def rows(self, split: str) -> int:
        """Rows of `split` recorded in the manifest."""
        return self.manifest["splits"][split]["count"]

    def _local_folder(self) -> Path:
        """The folder to read from in this process: `path`, or on another node of a cluster (a
        handle sent to a Ray worker there) a local copy of the remote dataset made now."""
        if self.source is None or (self.path / MANIFEST_NAME).is_file():
            return self.path
        return local_copy(self.source)[0]

    @property
    def location(self) -> str:
        """Where the dataset lives: its object-store URI, else its folder."""
        return self.source or str(self.path.resolve())

    def shard_paths(self, split: str) -> list[str]:
        """The split's Parquet shards, what Ray Data reads: on the object store for a remote
        dataset (any node reaches them), else absolute local paths."""
        local = shard_paths(self.path, split)
        if self.source is None:
            return local
        root = str(self.path.resolve())
        return [self.source + path.removeprefix(root) for path in local]

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The whole split: uint8 [n, H, W, C] images and int64 labels (undecodable rows left
        out); read once per process."""
        if split not in self._splits:
            images, labels, _ = read_split(self._local_folder(), split)
            self._splits[split] = (images, labels)
        return self._splits[split]

    def class_images(self, split: str) -> tuple[torch.Tensor, np.ndarray]:
        """The split as uint8 [n, C, H, W] plus labels, for episodes. When the manifest records a
        class split, a row whose class belongs to another split is an error (episodes never
        mix splits)."""
        images, labels = self.read(split)
        allowed = self.manifest.get("class_split", {}).get(split)
        if allowed is not None:
            index = {name: i for i, name in enumerate(self.manifest["classes"])}
            allowed_ids = np.array([index[name] for name in allowed], dtype=np.int64)
            stray = ~np.isin(labels, allowed_ids)
            if stray.any():
                row = int(np.flatnonzero(stray)[0])
                raise ShardError(
                    f"{self.path}: split '{split}' row {row} has class "
                    f"'{self.manifest['classes'][labels[row]]}', which the manifest's "
                    "class_split assigns to another split"
                )
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels
