"""Datasets on an object store (s3://bucket/datasets/NAME), so every node of a cluster reads
the same shards: ingest writes locally and uploads (the manifest last, so a half upload is
never a dataset), and a process that opens one keeps a verified local copy for the reads it
makes itself (evaluation, figures) while Ray Data reads the shards from the store."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from reprlab.data.catalog import datasets_root
from reprlab.data.manifest import MANIFEST_NAME, ShardError, verify_dataset

CACHE_FOLDER = ".remote"
"""Under the datasets root; hidden, so `reprlab datasets` does not list the copies."""


def upload_dataset(local: Path, uri: str) -> str:
    """Copy an ingested dataset folder to `uri` (shards first, manifest last); returns `uri`."""
    filesystem, root = pafs.FileSystem.from_uri(uri)
    filesystem.create_dir(root, recursive=True)
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    for path in [*files, local / MANIFEST_NAME]:
        target = f"{root}/{path.relative_to(local).as_posix()}"
        filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(path), target, destination_filesystem=filesystem)
    return uri


def remote_manifest(uri: str) -> dict:
    """The manifest of the dataset at `uri`; ValueError (one line) when there is none."""
    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(f"{root}/{MANIFEST_NAME}") as stream:
            return json.loads(stream.read())
    except (OSError, json.JSONDecodeError) as error:
        reason = str(error).splitlines()[0][:160]
        raise ValueError(f"{uri}: no readable {MANIFEST_NAME} there ({reason})") from None


def local_copy(uri: str, root: Path | None = None) -> tuple[Path, dict]:
    """A local copy of the dataset at `uri` under the datasets root and its verified manifest
    (every shard hashed once), downloaded again only when the store's manifest differs."""
    manifest = remote_manifest(uri)
    bucket_and_key = uri.split("://", 1)[1].strip("/")
    target = Path(root or datasets_root()) / CACHE_FOLDER / bucket_and_key
    if (target / MANIFEST_NAME).is_file():
        if json.loads((target / MANIFEST_NAME).read_text()) == manifest:
            try:
                return target, verify_dataset(target)
            except ShardError:
                pass
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        pafs.copy_files(uri, str(staging))
        verified = verify_dataset(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, verified
