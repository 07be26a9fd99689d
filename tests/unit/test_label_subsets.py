"""Label subsets: seeded and stratified choice, row identity by pixels, the Ray Data steps that
keep the labelled rows and hide the others' labels, and the job keys that ask for them."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from reprlab.augment import WeakPolicy
from reprlab.config import ConfigError, load_job
from reprlab.data.catalog import ingest
from reprlab.data.handle import DatasetHandle
from reprlab.data.label_subsets import (
    label_subset,
    row_keys,
    stratified_rows,
)
from reprlab.data.pipeline import augment_views, keep_rows
from reprlab.train.prepare import prepare

LABELS = np.repeat(np.arange(5), [10, 20, 30, 40, 50])


def test_k_per_class_gives_exactly_k_rows_of_every_class() -> None:
    rows = stratified_rows(LABELS, seed=0, per_class=4)
    assert np.bincount(LABELS[rows]).tolist() == [4] * 5
    assert np.array_equal(rows, np.unique(rows))  # sorted, no row twice


def test_a_fraction_keeps_that_share_of_each_class_and_at_least_one() -> None:
    rows = stratified_rows(LABELS, seed=0, fraction=0.1)
    assert np.bincount(LABELS[rows]).tolist() == [1, 2, 3, 4, 5]
    rows = stratified_rows(LABELS, seed=0, fraction=0.01)
    assert np.bincount(LABELS[rows]).tolist() == [1] * 5


def test_the_seed_fixes_the_choice() -> None:
    first = stratified_rows(LABELS, seed=3, per_class=4)
    assert np.array_equal(first, stratified_rows(LABELS, seed=3, per_class=4))
    assert not np.array_equal(first, stratified_rows(LABELS, seed=4, per_class=4))


def test_asking_more_than_a_class_has_names_the_class() -> None:
    with pytest.raises(ValueError, match="class 0 has 10 rows, fewer than the 11 asked"):
        stratified_rows(LABELS, seed=0, per_class=11)
    with pytest.raises(ValueError, match="exactly one"):
        stratified_rows(LABELS, seed=0)


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (count, 4, 4, 1), dtype=np.uint8)


def test_row_keys_are_the_crc_of_each_rows_pixels() -> None:
    images = _images(3)
    assert row_keys(images).tolist() == [zlib.crc32(image.tobytes()) for image in images]


def test_a_subset_never_picks_a_row_whose_pixels_another_row_repeats() -> None:
    images, labels = _images(40), np.arange(40) % 2
    images[1] = images[3]  # class 1: rows 1 and 3 cannot be told apart in a stream
    for seed in range(5):
        subset = label_subset(images, labels, seed, per_class=18)  # every other row of class 1
        assert 1 not in subset.positions and 3 not in subset.positions
        assert np.array_equal(subset.keys, row_keys(images[subset.positions]))


def test_equal_subsets_have_equal_digests() -> None:
    images, labels = _images(40), np.arange(40) % 4
    first = label_subset(images, labels, 0, per_class=2)
    assert first.digest == label_subset(images, labels, 0, per_class=2).digest
    assert first.digest != label_subset(images, labels, 1, per_class=2).digest


def _shard_rows(images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    return {"image": np.array([row.tobytes() for row in images], dtype=object), "label": labels}


def test_keep_rows_keeps_the_subsets_rows_repeated_and_drops_the_rest() -> None:
    images = _images(6)
    batch = _shard_rows(images, np.arange(6))
    batch["image"][4] = b"torn"  # undecodable: never kept
    keys = row_keys(images[[1, 4, 5]])
    kept = keep_rows(batch, shape=(4, 4, 1), keys=keys, repeat=3)
    assert kept["label"].tolist() == [1, 1, 1, 5, 5, 5]
    assert list(kept["image"]) == [images[1].tobytes()] * 3 + [images[5].tobytes()] * 3


def test_unlabelled_rows_leave_the_pipeline_with_label_minus_one() -> None:
    batch = _shard_rows(_images(8), np.arange(8))
    weak = WeakPolicy(hflip_p=0, translate=0).at_size(4)  # the identity: views are the rows
    shown = augment_views(batch, shape=(4, 4, 1), policy=weak, second=weak, seed=0)
    hidden = augment_views(
        batch, shape=(4, 4, 1), policy=weak, second=weak, hide_labels=True, seed=0
    )
    assert hidden["label"].tolist() == [-1] * 8
    assert sorted(shown["label"].tolist()) == list(range(8))
    assert np.array_equal(hidden["view1"], shown["view1"])


def test_a_second_policy_draws_view2() -> None:
    batch = _shard_rows(_images(8), np.arange(8))
    identity = WeakPolicy(hflip_p=0, translate=0).at_size(4)
    shifting = WeakPolicy(hflip_p=0, translate=0.5, padding_mode="zeros").at_size(4)
    views = augment_views(batch, shape=(4, 4, 1), policy=identity, second=shifting, seed=0)
    originals = _images(8)[views["label"]].transpose(0, 3, 1, 2)
    assert np.array_equal(views["view1"], originals)
    assert not np.array_equal(views["view2"], originals)


def test_a_label_subset_needs_a_method_that_takes_one() -> None:
    with pytest.raises(ConfigError, match=r"data.labels_per_class: method 'simclr' .* fixmatch"):
        load_job("jobs/quickstart.yaml", ["data.labels_per_class=4"])
    with pytest.raises(ConfigError, match="labels_per_class or label_fraction, not both"):
        load_job(
            "jobs/semi/fixmatch_mnist5k.yaml",
            ["data.labels_per_class=4", "data.label_fraction=0.1"],
        )
    job = load_job(
        "jobs/semi/fixmatch_mnist5k.yaml", ["data.labels_per_class=null", "data.label_fraction=0.1"]
    )
    assert job.data.label_fraction == 0.1 and job.data.labels_per_class is None


def test_more_labels_per_class_than_a_class_has_fails_before_ray_naming_the_class() -> None:
    ingest("digits")
    per_class = DatasetHandle.open("digits").manifest["splits"]["train"]["per_class"]
    smallest, count = min(per_class.items(), key=lambda item: item[1])
    job = load_job(
        "jobs/semi/fixmatch_mnist5k.yaml",
        ["data.dataset=digits", f"data.labels_per_class={count + 1}"],
    )
    with pytest.raises(ConfigError) as error:
        prepare(job)
    assert str(error.value) == (
        f"data.labels_per_class: class {smallest!r} of digits's train split has {count} rows; "
        f"must be <= {count}, got {count + 1}"
    )
    assert prepare(load_job("jobs/semi/fixmatch_mnist5k.yaml", ["data.dataset=digits"]))
