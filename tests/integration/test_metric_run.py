"""Metric learning end to end: m-per-class views drawn by real Ray Data tasks are the same global
batch for 1 and 2 workers, and a triplet run on 2 Ray Train workers logs retrieval and
clustering metrics to MLflow."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from reprlab.config import JobConfig, validate_job
from reprlab.data.catalog import ingest
from reprlab.train.prepare import prepare
from reprlab.train.run import run_prepared
from reprlab.train.sources import MPerClassSource

pytestmark = pytest.mark.integration


def triplet_job(epochs: int) -> JobConfig:
    return validate_job(
        {
            "name": "triplet_digits",
            "method": "triplet",
            "method_args": {"mining": "semihard", "embedding_dim": 32},
            "data": {
                "dataset": "digits",
                "image_size": 8,
                "batch_size": 32,
                "m_per_class": 4,
                "augment": {"policy": "simclr", "hflip_p": 0, "crop_scale": [0.6, 1.0]},
            },
            "model": {"backbone": "conv4", "width": 16},
            "optim": {"lr": 0.003, "epochs": epochs, "warmup_epochs": 0},
            "scaling": {"num_workers": 2},
            "eval": {"online_linear": False, "retrieval_every": 1},
            "tracking": {"experiment": "metric", "augment_grid_pairs": 4},
        }
    )


def test_ray_data_draws_the_same_global_batches_for_one_and_two_workers(ray_cluster) -> None:
    ingest("digits")
    job = triplet_job(epochs=1)
    source = MPerClassSource(job, prepare(job).dataset)
    whole = source.epoch_views(0, world=1, rank=0).take_all()
    halves = [source.epoch_views(0, world=2, rank=rank).take_all() for rank in (0, 1)]
    size = job.data.batch_size
    assert len(whole) == source.steps_per_epoch(1) * size
    for step in range(source.steps_per_epoch(1)):
        one = whole[step * size : (step + 1) * size]
        two = [rows for half in halves for rows in half[step * size // 2 : (step + 1) * size // 2]]
        assert [row["label"] for row in one] == [row["label"] for row in two]
        assert all(np.array_equal(a["view1"], b["view1"]) for a, b in zip(one, two, strict=True))
        labels = np.array([row["label"] for row in one]).reshape(-1, 4)
        assert (labels == labels[:, :1]).all() and len(set(labels[:, 0])) == 8  # 8 classes x 4


def test_a_triplet_run_logs_retrieval_and_clustering(ray_cluster) -> None:
    ingest("digits")
    summary = run_prepared(prepare(triplet_job(epochs=2)))
    client = MlflowClient(summary.record.tracking_uri)
    run = client.get_run(summary.record.mlflow_run_id)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "retrieval_precision_at_1")
    assert [point.step for point in history] == [1, 2]  # every epoch, on all workers' rows
    metrics = run.data.metrics
    assert metrics["eval/retrieval_precision_at_1"] > 0.5  # 10 digit classes: chance is 0.1
    assert 0 < metrics["train/active_triplets"] <= 1
    for key in ("acc", "nmi", "ari"):
        assert f"eval/clustering_{key}" in metrics
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "augment")}
    assert "augment/m_per_class_batch.png" in artifacts
