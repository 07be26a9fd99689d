"""Shard layer: write/read round trip, determinism, checksums, atomicity, decoding."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from reprlab.data.manifest import (
    IMAGE_FORMAT,
    SCHEMA_VERSION,
    ShardError,
    load_manifest,
    shard_paths,
    verify_dataset,
)
from reprlab.data.shards import decode_images, read_split, write_dataset

CLASSES = ["cat", "dog", "eel"]


def make_data(n: int = 50, shape: tuple[int, ...] = (6, 5, 3), seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = rng.integers(0, len(CLASSES), size=n).astype(np.int64)
    splits = np.where(rng.random(n) < 0.7, "train", "test")
    return images, labels, splits


def write(root: Path, images, labels, splits, name: str = "toy", **kwargs) -> Path:
    options = {"source": "synthetic", "seed": 7, "test_fraction": 0.3, "rows_per_shard": 16}
    return write_dataset(root, name, images, labels, CLASSES, splits, **{**options, **kwargs})


def sha256s(dataset_dir: Path) -> dict[str, str]:
    return {s["file"]: s["sha256"] for s in load_manifest(dataset_dir)["shards"]}


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_round_trip_preserves_pixels_labels_and_counts(tmp_path):
    images, labels, splits = make_data()
    dataset_dir = write(tmp_path, images, labels, splits)

    assert dataset_dir == tmp_path / "toy"
    manifest = verify_dataset(dataset_dir)
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["image_format"] == IMAGE_FORMAT
    assert manifest["image_shape"] == [6, 5, 3]
    assert manifest["classes"] == CLASSES
    for split in ("train", "test"):
        in_split = splits == split
        got_images, got_labels, bad_rows = read_split(dataset_dir, split)
        assert bad_rows == 0
        np.testing.assert_array_equal(got_images, images[in_split])
        np.testing.assert_array_equal(got_labels, labels[in_split])
        assert got_labels.dtype == np.int64
        counts = manifest["splits"][split]
        assert counts["count"] == in_split.sum()
        expected = {c: int((labels[in_split] == i).sum()) for i, c in enumerate(CLASSES)}
        assert counts["per_class"] == expected


def test_shards_are_named_by_split_and_hold_about_rows_per_shard(tmp_path):
    images, labels, splits = make_data()
    dataset_dir = write(tmp_path, images, labels, splits)

    manifest = load_manifest(dataset_dir)
    n_train = int((splits == "train").sum())
    train_files = [Path(p).name for p in shard_paths(dataset_dir, "train")]
    assert train_files == [f"train-{i:05d}.parquet" for i in range(-(-n_train // 16))]
    assert sorted(p.name for p in dataset_dir.iterdir()) == sorted(
        [s["file"] for s in manifest["shards"]] + ["manifest.json"]
    )
    assert all(s["rows"] <= 16 for s in manifest["shards"])
    table = pq.read_table(shard_paths(dataset_dir, "test")[0])
    assert table.column_names == ["image", "label", "class_name", "split"]
    assert set(table.column("split").to_pylist()) == {"test"}
    names = table.column("class_name").to_pylist()
    assert names == [CLASSES[i] for i in table.column("label").to_pylist()]


def test_two_dimensional_images_get_one_channel_and_unlabeled_rows_keep_minus_one(tmp_path):
    images, labels, splits = make_data(n=10, shape=(4, 4))
    labels[:3] = -1
    dataset_dir = write(tmp_path, images, labels, np.full(10, "train"))

    got_images, got_labels, _ = read_split(dataset_dir, "train")
    assert got_images.shape == (10, 4, 4, 1)
    np.testing.assert_array_equal(got_images[..., 0], images)
    np.testing.assert_array_equal(got_labels, labels)
    table = pq.read_table(shard_paths(dataset_dir, "train")[0])
    assert table.column("class_name").to_pylist()[:3] == ["", "", ""]


def test_same_input_gives_byte_identical_files(tmp_path):
    images, labels, splits = make_data()
    first = write(tmp_path / "a", images, labels, splits)
    second = write(tmp_path / "b", images, labels, splits)

    assert sha256s(first) == sha256s(second)
    assert (first / "manifest.json").read_bytes() == (second / "manifest.json").read_bytes()


def test_flipped_byte_fails_verification_naming_the_shard(tmp_path):
    images, labels, splits = make_data()
    dataset_dir = write(tmp_path, images, labels, splits)
    shard = dataset_dir / "train-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))

    with pytest.raises(ShardError, match="train-00001.parquet: sha256 mismatch") as caught:
        verify_dataset(dataset_dir)
    assert "\n" not in str(caught.value)


def test_missing_shard_fails_verification_naming_the_shard(tmp_path):
    images, labels, splits = make_data()
    dataset_dir = write(tmp_path, images, labels, splits)
    (dataset_dir / "test-00000.parquet").unlink()

    with pytest.raises(ShardError, match="test-00000.parquet: missing"):
        verify_dataset(dataset_dir)


def fail_on_second_write(monkeypatch):
    real_write_table = pq.write_table
    calls = []

    def write_table(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write_table(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_table)


def test_failed_write_leaves_no_dataset_and_no_temp_dir(tmp_path, monkeypatch):
    images, labels, splits = make_data()
    fail_on_second_write(monkeypatch)

    with pytest.raises(OSError, match="disk full"):
        write(tmp_path, images, labels, splits)
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_previous_good_version(tmp_path, monkeypatch):
    images, labels, splits = make_data()
    dataset_dir = write(tmp_path, images, labels, splits)
    before = sha256s(dataset_dir)
    fail_on_second_write(monkeypatch)

    with pytest.raises(OSError, match="disk full"):
        write(tmp_path, images[::-1].copy(), labels, splits)
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]
    verify_dataset(dataset_dir)
    assert sha256s(dataset_dir) == before


def test_successful_rewrite_replaces_the_old_version_without_leftovers(tmp_path):
    images, labels, splits = make_data()
    write(tmp_path, images, labels, splits)
    dataset_dir = write(tmp_path, images[:20], labels[:20], splits[:20])

    assert [p.name for p in tmp_path.iterdir()] == ["toy"]
    assert sum(s["rows"] for s in verify_dataset(dataset_dir)["shards"]) == 20


def test_refuses_to_replace_a_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "precious.txt").write_text("keep me")
    images, labels, splits = make_data()

    with pytest.raises(ValueError, match="not a reprlab dataset"):
        write(tmp_path, images, labels, splits)
    assert (tmp_path / "toy" / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": np.zeros((3, 4, 4), np.float32)}, "uint8"),
        ({"labels": np.zeros(2, np.int64)}, r"labels must be integers of shape \(3,\)"),
        ({"labels": np.array([0, 1, 3])}, r"labels\[2\] = 3 is outside -1..2"),
        ({"splits": np.array(["train", "te st", "train"])}, "split name 'te st'"),
        ({"name": "../escape"}, "dataset name"),
    ],
)
def test_bad_inputs_are_rejected_with_clear_errors(tmp_path, change, message):
    arguments = {
        "images": np.zeros((3, 4, 4), np.uint8),
        "labels": np.array([0, 1, 2]),
        "splits": np.array(["train"] * 3),
        **change,
    }
    with pytest.raises(ValueError, match=message):
        write(tmp_path, **arguments)


def test_load_manifest_errors_name_the_file_and_key(tmp_path):
    with pytest.raises(ShardError, match=r"manifest.json: not found"):
        load_manifest(tmp_path)
    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text("{not json")
    with pytest.raises(ShardError, match=r"manifest.json: invalid JSON"):
        load_manifest(tmp_path)
    manifest_path.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ShardError, match=r"key 'schema_version' is 99"):
        load_manifest(tmp_path)
    manifest_path.write_text(json.dumps({"schema_version": 1, "name": "x"}))
    with pytest.raises(ShardError, match=r"manifest.json: missing key 'source'"):
        load_manifest(tmp_path)


def test_shard_entry_may_not_point_outside_the_dataset(tmp_path):
    images, labels, splits = make_data()
    dataset_dir = write(tmp_path, images, labels, splits)
    manifest = load_manifest(dataset_dir)
    manifest["shards"][0]["file"] = "../elsewhere.parquet"
    (dataset_dir / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(ShardError, match=r"'shards\[0\].file' must be a plain file name"):
        load_manifest(dataset_dir)


def test_unknown_split_lists_available_ones(tmp_path):
    images, labels, splits = make_data()
    dataset_dir = write(tmp_path, images, labels, splits)

    with pytest.raises(ShardError, match="no split 'val'; available: test, train"):
        shard_paths(dataset_dir, "val")
    assert all(Path(p).is_absolute() for p in shard_paths(dataset_dir, "train"))


def test_decode_images_masks_bad_rows_and_decodes_png():
    shape = (4, 3, 1)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(3, *shape), dtype=np.uint8)
    png_pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    blobs = [
        pixels[0].tobytes(),
        pixels[1].tobytes()[:-1],  # truncated
        None,
        png_bytes(png_pixels[..., 0]),
        b"\x89PNG\r\n\x1a\n not really a png",
        pixels[2].tobytes(),
    ]

    images, ok = decode_images(blobs, shape)

    np.testing.assert_array_equal(ok, [True, False, False, True, False, True])
    assert images.dtype == np.uint8 and images.shape == (3, *shape)
    np.testing.assert_array_equal(images, np.stack([pixels[0], png_pixels, pixels[2]]))


def test_decode_images_converts_png_channels_and_rejects_wrong_size():
    rgb = np.random.default_rng(2).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))

    images, ok = decode_images([png_bytes(rgb)], (5, 4, 1))
    assert ok.tolist() == [True]
    np.testing.assert_array_equal(images[0, ..., 0], gray)

    images, ok = decode_images([png_bytes(rgb)], (4, 5, 3))
    assert ok.tolist() == [False] and images.shape == (0, 4, 5, 3)


def test_decode_images_raw_fast_path_is_writable_and_handles_empty_input():
    pixels = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    images, ok = decode_images([p.tobytes() for p in pixels], (2, 2, 3))
    np.testing.assert_array_equal(images, pixels)
    assert ok.all() and images.flags.writeable

    images, ok = decode_images([], (2, 2, 3))
    assert images.shape == (0, 2, 2, 3) and ok.shape == (0,)


def test_read_split_counts_bad_rows(tmp_path):
    images, labels, splits = make_data(n=8, shape=(2, 2, 1))
    dataset_dir = write(tmp_path, images, labels, np.full(8, "train"))
    shard = dataset_dir / "train-00000.parquet"
    table = pq.read_table(shard)
    blobs = table.column("image").to_pylist()
    blobs[3] = b"\x00"
    table = table.set_column(0, "image", [blobs])
    pq.write_table(table, shard)

    got_images, got_labels, bad_rows = read_split(dataset_dir, "train")
    keep = np.arange(8) != 3
    assert bad_rows == 1
    np.testing.assert_array_equal(got_images, images[keep])
    np.testing.assert_array_equal(got_labels, labels[keep])


def test_decode_images_handles_jpeg_and_keeps_raw_rows_that_start_like_jpeg():
    rgb = np.full((8, 8, 3), 200, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
    raw = np.zeros((8, 8, 3), dtype=np.uint8)
    raw.reshape(-1)[:3] = [0xFF, 0xD8, 0xFF]  # JPEG start marker, but no end marker

    images, ok = decode_images([buffer.getvalue(), raw.tobytes()], (8, 8, 3))

    assert ok.tolist() == [True, True]
    assert np.abs(images[0].astype(int) - 200).max() <= 2
    np.testing.assert_array_equal(images[1], raw)
