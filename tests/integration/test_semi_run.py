"""Learning from few labels end to end: the labelled and unlabelled Ray Data streams of a label
subset, and a FixMatch run on 2 Ray Train workers recorded in MLflow with its labelled rows."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from reprlab.config import JobConfig, validate_job
from reprlab.data.catalog import ingest
from reprlab.data.label_subsets import row_keys
from reprlab.train.prepare import prepare
from reprlab.train.run import run_prepared
from reprlab.train.sources import LabelledUnlabelledSource

pytestmark = pytest.mark.integration

PER_CLASS = 2


def semi_job(epochs: int, translate: float = 0.125) -> JobConfig:
    return validate_job(
        {
            "name": "semi",
            "method": "fixmatch",
            "method_args": {"threshold": 0.5, "ema_decay": 0.9},
            "data": {
                "dataset": "digits",
                "image_size": 8,
                "batch_size": 32,
                "unlabelled_ratio": 1,  # 44 steps an epoch: BatchNorm's running variance settles
                "labels_per_class": PER_CLASS,
                "augment": {"policy": "weak", "hflip_p": 0, "translate": translate},
                "strong_augment": {"policy": "strong", "hflip_p": 0},
            },
            "model": {"backbone": "conv4", "width": 16},
            "optim": {"lr": 0.003, "epochs": epochs, "warmup_epochs": 0},
            "scaling": {"num_workers": 2},
            "eval": {"linear_probe": False, "knn": False},
            "tracking": {"experiment": "semi", "augment_grid_pairs": 4},
        }
    )


def test_the_unlabelled_stream_hides_every_label_and_the_labelled_one_is_the_subset(
    ray_cluster,
) -> None:
    ingest("digits")
    job = semi_job(epochs=2, translate=0.0)  # weak views without a shift are the rows themselves
    dataset = prepare(job).dataset
    source = LabelledUnlabelledSource(job, dataset)
    try:
        streams = source.ray_datasets(lambda: 0)
        unlabelled = streams["unlabelled"]().take_all()
        labelled = streams["labelled"]().take_all()
    finally:
        source.close()
    train_rows = dataset.rows("train")
    assert len(unlabelled) == 2 * train_rows
    assert {row["label"] for row in unlabelled} == {-1}

    repeat = source.labelled_rows(source.steps_per_epoch(1) * job.data.batch_size).repeat
    labels = np.array([row["label"] for row in labelled])
    assert np.bincount(labels).tolist() == [2 * repeat * PER_CLASS] * 10
    pixels = np.stack([row["view1"] for row in labelled]).transpose(0, 2, 3, 1)
    assert set(row_keys(pixels)) == set(source.subset.keys.tolist())
    assert len(labelled) >= 2 * source.steps_per_epoch(1) * job.data.batch_size  # every step fed


def test_a_fixmatch_run_learns_from_its_labelled_rows_and_records_which(ray_cluster) -> None:
    ingest("digits")
    summary = run_prepared(prepare(semi_job(epochs=2)))
    client = MlflowClient(summary.record.tracking_uri)
    run = client.get_run(summary.record.mlflow_run_id)
    assert run.info.status == "FINISHED"
    params, metrics = run.data.params, run.data.metrics
    assert params["data.labelled_rows"] == str(10 * PER_CLASS)
    assert len(params["data.label_subset_digest"]) == 16

    table = client.download_artifacts(run.info.run_id, "data/labelled_rows.csv")
    rows = np.loadtxt(table, delimiter=",", skiprows=1, dtype=np.int64)
    assert np.bincount(rows[:, 2]).tolist() == [PER_CLASS] * 10
    _, labels = prepare(semi_job(epochs=2)).dataset.read("train")
    assert np.array_equal(labels[rows[:, 0]], rows[:, 2])

    for key in ("classifier_acc", "online_linear_acc", "train/mask_rate", "train/loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == [1, 2], key
    assert 0 <= metrics["train/mask_rate"] <= 1
    assert metrics["eval/classifier_acc"] > 0.3, metrics  # 20 labels, 2 short epochs; chance 0.1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "augment")}
    assert "augment/weak_strong_pairs.png" in artifacts
