"""Datasets on an object store, exercised through pyarrow's file:// filesystem (the same code
path as s3://, which tests/cluster runs against a real S3 endpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from reprlab.data.catalog import datasets_root, ingest
from reprlab.data.handle import DatasetHandle
from reprlab.data.manifest import MANIFEST_NAME
from reprlab.data.remote import CACHE_FOLDER, upload_dataset


@pytest.fixture
def store(tmp_path: Path) -> str:
    """The digits set uploaded to a file:// 'bucket'; its URI."""
    local = ingest("digits", tmp_path / "ingested")
    return upload_dataset(local, (tmp_path / "bucket" / "datasets" / "digits").as_uri())


def test_a_remote_dataset_opens_from_a_local_copy_and_ray_reads_the_store(store: str) -> None:
    handle = DatasetHandle.open(store)
    assert handle.source == store and handle.location == store
    assert handle.path.is_relative_to(datasets_root() / CACHE_FOLDER)
    assert handle.name == "digits"
    shards = handle.shard_paths("train")
    assert shards and all(path.startswith(f"{store}/") for path in shards)
    images, labels = handle.read("train")
    assert len(images) == len(labels) == handle.rows("train") == 1437


def test_the_copy_is_reused_until_the_store_changes(store: str, monkeypatch) -> None:
    first = DatasetHandle.open(store)
    copies = []
    real_copy = pafs.copy_files
    monkeypatch.setattr(pafs, "copy_files", lambda *a, **k: copies.append(a) or real_copy(*a, **k))
    assert DatasetHandle.open(store).path == first.path
    assert copies == []
    filesystem, root = pafs.FileSystem.from_uri(store)
    manifest = json.loads(filesystem.open_input_stream(f"{root}/{MANIFEST_NAME}").read())
    manifest["reuploaded"] = True
    with filesystem.open_output_stream(f"{root}/{MANIFEST_NAME}") as out:
        out.write(json.dumps(manifest).encode())
    DatasetHandle.open(store)
    assert len(copies) == 1


def test_a_worker_on_another_node_makes_its_own_copy(store: str) -> None:
    handle = DatasetHandle.open(store)
    moved = DatasetHandle(handle.path.parent / "elsewhere", handle.manifest, source=store)
    images, _ = moved.read("test")
    assert len(images) == 360


def test_a_damaged_shard_in_the_store_fails_in_one_line(store: str) -> None:
    filesystem, root = pafs.FileSystem.from_uri(store)
    shard = next(
        info.path
        for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
        if info.path.endswith(".parquet")
    )
    with filesystem.open_output_stream(shard) as out:
        out.write(b"not parquet")
    with pytest.raises(ValueError, match=r"sha256 mismatch .* re-ingest the dataset") as error:
        DatasetHandle.open(store)
    assert "\n" not in str(error.value)


def test_a_uri_without_a_dataset_names_it(tmp_path: Path) -> None:
    empty = (tmp_path / "nothing").as_uri()
    with pytest.raises(ValueError, match=f"{empty}: no readable {MANIFEST_NAME} there"):
        DatasetHandle.open(empty)
