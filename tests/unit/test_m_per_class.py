"""m-per-class batches: P classes x m images, seeded, and the same global batch for 1 and 2
workers (each worker a contiguous run of whole classes)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from reprlab.config import ConfigError, JobConfig
from reprlab.data.catalog import ingest
from reprlab.data.m_per_class import MPerClassSampler, MPerClassSpec, worker_groups
from reprlab.train.prepare import prepare
from reprlab.train.sources.m_per_class import local_views


def _labels() -> np.ndarray:
    # 6 classes of 10 rows, plus a class 6 with only 2 rows, shuffled
    labels = np.concatenate([np.repeat(np.arange(6), 10), [6, 6]])
    return np.random.default_rng(0).permutation(labels)


def test_a_batch_holds_p_distinct_classes_with_m_rows_each_class_major() -> None:
    labels = _labels()
    sampler = MPerClassSampler(labels, MPerClassSpec(classes=4, per_class=3), seed=1)
    rows = sampler.batch_rows(epoch=0, index=0)
    assert rows.shape == (12,)
    groups = labels[rows].reshape(4, 3)
    assert all(len(set(group)) == 1 for group in groups)  # class-major
    assert len({group[0] for group in groups}) == 4  # distinct classes
    for group_rows in rows.reshape(4, 3):
        if labels[group_rows[0]] != 6:
            assert len(set(group_rows)) == 3  # no repeats within a class that has m rows


def test_batches_depend_on_seed_epoch_and_index_only() -> None:
    labels = _labels()
    spec = MPerClassSpec(classes=3, per_class=4)
    first = MPerClassSampler(labels, spec, seed=5)
    again = MPerClassSampler(labels, spec, seed=5)
    assert np.array_equal(first.batch_rows(2, 7), again.batch_rows(2, 7))
    assert not np.array_equal(first.batch_rows(2, 7), first.batch_rows(2, 8))
    assert not np.array_equal(first.batch_rows(2, 7), first.batch_rows(3, 7))
    assert not np.array_equal(
        first.batch_rows(2, 7), MPerClassSampler(labels, spec, 6).batch_rows(2, 7)
    )


def test_a_class_smaller_than_m_gives_every_row_before_repeating() -> None:
    labels = np.array([0, 0, 1, 1, 1, 1, 1])
    sampler = MPerClassSampler(labels, MPerClassSpec(classes=2, per_class=4), seed=0)
    for index in range(5):
        rows = sampler.batch_rows(0, index)
        small = [row for row in rows if labels[row] == 0]
        assert len(small) == 4 and set(small) == {0, 1}


def test_too_few_classes_and_uneven_worker_split_are_refused() -> None:
    with pytest.raises(ValueError, match="glyphs/train: 7 classes, fewer than the 8 classes"):
        MPerClassSampler(_labels(), MPerClassSpec(8, 2), seed=0, where="glyphs/train")
    with pytest.raises(ValueError, match="3 classes per batch do not split over 2 workers"):
        worker_groups(MPerClassSpec(3, 4), rank=0, world=2)


def test_two_workers_hold_exactly_the_one_worker_global_batch() -> None:
    rng = np.random.default_rng(0)
    labels = _labels()
    images = rng.integers(0, 256, size=(len(labels), 12, 12, 1), dtype=np.uint8)
    spec = MPerClassSpec(classes=4, per_class=3)
    sampler = MPerClassSampler(labels, spec, seed=3)
    policy = JobConfig().data.augment.at_size(12)
    ids = {"epoch": np.array([0, 1]), "index": np.array([4, 0])}

    def views(rank: int, world: int) -> dict[str, np.ndarray]:
        groups = worker_groups(spec, rank, world)
        return local_views(
            ids, images=images, labels=labels, sampler=sampler, policy=policy, groups=groups
        )

    whole = views(0, 1)
    halves = [views(0, 2), views(1, 2)]
    per_batch = spec.size
    for batch in range(2):
        one = slice(batch * per_batch, (batch + 1) * per_batch)
        half = slice(batch * per_batch // 2, (batch + 1) * per_batch // 2)
        for key in ("view1", "label"):
            joined = np.concatenate([part[key][half] for part in halves])
            assert np.array_equal(whole[key][one], joined)
    assert whole["view1"].shape == (2 * per_batch, 1, 12, 12)
    expected = np.concatenate([labels[sampler.batch_rows(0, 4)], labels[sampler.batch_rows(1, 0)]])
    assert np.array_equal(whole["label"], expected)
    assert not np.array_equal(whole["view1"][:3], whole["view1"][3:6])  # groups draw apart


@pytest.mark.parametrize(
    "data,method,expected",
    [
        ({}, "triplet", "data.m_per_class: method 'triplet' trains on m-per-class batches"),
        ({"m_per_class": 4}, "simclr", "data.m_per_class: method 'simclr' does not train on"),
        ({"m_per_class": 5}, "triplet", "data.m_per_class: must divide data.batch_size (256)"),
        (
            {"m_per_class": 64},  # 4 classes: fine for 2 workers, not for 8
            "triplet",
            "data.batch_size / data.m_per_class: must be a multiple of scaling.num_workers (8)",
        ),
    ],
)
def test_m_per_class_settings_are_checked_in_one_line(data, method, expected) -> None:
    workers = 8 if data.get("m_per_class") == 64 else 2
    with pytest.raises(ValueError, match=re.escape(expected)):
        JobConfig(method=method, data=data, scaling={"num_workers": workers})


def test_more_classes_per_batch_than_the_split_has_fails_before_ray() -> None:
    ingest("digits")
    job = JobConfig(
        method="triplet",
        data={"dataset": "digits", "image_size": 8, "batch_size": 48, "m_per_class": 4},
    )
    with pytest.raises(ConfigError, match="data.m_per_class: digits's train split has 10 classes"):
        prepare(job)
