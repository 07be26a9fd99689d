"""A real SimCLR run end to end: Parquet shards (one row corrupt) -> Ray Data -> 2 Ray Train
workers -> evaluation -> MLflow (SQLite), then a resume of the same run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from mlflow.tracking import MlflowClient

from reprlab.augment import SimCLRPolicy
from reprlab.config import validate_job
from reprlab.data.catalog import ingest
from reprlab.data.handle import DatasetHandle
from reprlab.data.pipeline import ingest_options, view_dataset
from reprlab.train.prepare import prepare
from reprlab.train.run import run_prepared
from reprlab.train.trainer import fit

pytestmark = pytest.mark.integration


def corrupt_first_train_row(dataset_dir: Path) -> None:
    """Truncate one image blob in the first train shard and re-sign the manifest, as a disk
    or writer fault that the checksum cannot catch would leave it."""
    manifest_path = dataset_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(s for s in manifest["shards"] if s["split"] == "train")
    shard = dataset_dir / entry["file"]
    table = pq.read_table(shard)
    blobs = table.column("image").to_pylist()
    blobs[0] = blobs[0][:5]
    table = table.set_column(
        table.schema.get_field_index("image"),
        "image",
        pa.array(blobs, type=table.schema.field("image").type),
    )
    pq.write_table(table, shard)
    entry["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


def quick_job(epochs: int, method: str = "simclr", method_args: dict | None = None):
    return validate_job(
        {
            "name": "itest",
            "method": method,
            "method_args": method_args or {},
            "data": {"dataset": "digits", "image_size": 16, "batch_size": 64},
            "model": {"backbone": "conv4", "width": 16},
            "optim": {"epochs": epochs, "warmup_epochs": 0},
            "scaling": {"num_workers": 2},
            # a one-epoch schedule decays to 0 within ~20 steps: a faster head for the test
            "eval": {"knn_every": 1, "online_linear_lr": 0.1},
            "tracking": {"experiment": "itest", "augment_grid_pairs": 4},
        }
    )


def test_run_then_resume(ray_cluster) -> None:
    corrupt_first_train_row(ingest("digits"))

    first = run_prepared(prepare(quick_job(epochs=1)))
    client = MlflowClient(first.record.tracking_uri)
    run = client.get_run(first.record.mlflow_run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for key in ("train/loss", "train/lr", "train/images_per_s", "train/epoch_time_s"):
        assert metrics[key] > 0, key
    assert metrics["data/bad_rows"] == 1
    assert 0.2 < metrics["online_linear_acc"] <= 1.0  # held-out accuracy of the online head
    assert 0.3 < metrics["knn_acc"] <= 1.0
    assert 0.5 < metrics["eval/linear_probe_acc"] <= 1.0  # far above 10 % chance
    assert 0.3 < metrics["eval/knn_acc"] <= 1.0
    assert run.data.params["method"] == "simclr"
    assert run.data.tags["version.ray"].startswith("2.60")
    artifacts = {a.path for a in client.list_artifacts(first.record.mlflow_run_id)}
    assert {"config", "augment"} <= artifacts
    assert [a.path for a in client.list_artifacts(first.record.mlflow_run_id, "augment")] == [
        "augment/view_pairs.png"
    ]
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [m.name for m in models] == ["encoder"]
    assert list(first.record.storage.glob("checkpoint_*/state.pt"))
    assert "Reporting training result" in first.record.log_file.read_text()  # Ray's, not ours

    resumed = run_prepared(prepare(quick_job(epochs=2), resume=first.record.run_name))
    assert resumed.record.mlflow_run_id == first.record.mlflow_run_id
    history = client.get_metric_history(first.record.mlflow_run_id, "epoch")
    assert sorted(m.value for m in history) == [1, 2]  # epoch 1 was not trained again
    online = client.get_metric_history(first.record.mlflow_run_id, "online_linear_acc")
    assert sorted(m.step for m in online) == [1, 2]
    assert client.get_run(first.record.mlflow_run_id).info.status == "FINISHED"


def test_momentum_method_with_queue_runs_on_two_workers(ray_cluster) -> None:
    """MoCo v2 gathers keys across workers inside the DDP forward and moves its momentum
    encoder after every step; the run must finish and learn something."""
    ingest("digits")
    args = {"queue_size": 256, "proj_hidden_dim": 64, "proj_dim": 32, "base_momentum": 0.9}
    result = run_prepared(prepare(quick_job(epochs=2, method="moco_v2", method_args=args)))
    run = MlflowClient(result.record.tracking_uri).get_run(result.record.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["train/loss"] > 0
    assert 0.5 < run.data.metrics["eval/linear_probe_acc"] <= 1.0


def test_the_loop_in_process_on_two_views(ray_cluster, tmp_path) -> None:
    """The worker loop in Ray Train's local mode (num_workers=0) on the Ray Data view stream."""
    ingest("digits")
    job = quick_job(epochs=1).model_copy(deep=True)
    job.scaling.num_workers = 0
    metrics = fit(prepare(job), tracking_uri=f"sqlite:///{tmp_path}/m.db").metrics
    assert metrics["epoch"] == 1 and metrics["train/loss"] > 0
    assert 0 <= metrics["train/online_linear_acc"] <= 1 and 0 <= metrics["knn_acc"] <= 1
    assert metrics["data/bad_rows"] == 0


def test_a_seed_draws_the_same_views_again(ray_cluster) -> None:
    """Under the training ingest options, the same seed streams the same first batch."""
    dataset = DatasetHandle.open(str(ingest("digits")))
    policy = SimCLRPolicy().at_size(8)
    context = ray.data.DataContext.get_current()

    def first_batch(seed: int):
        views = view_dataset(dataset, "train", policy, seed=seed)
        return next(iter(views.iter_batches(batch_size=64, batch_format="numpy")))

    saved, context.execution_options = context.execution_options, ingest_options(1.0)
    try:
        same, again, other = first_batch(0), first_batch(0), first_batch(1)
    finally:
        context.execution_options = saved
    assert np.array_equal(same["view1"], again["view1"])
    assert np.array_equal(same["label"], again["label"])
    assert not np.array_equal(same["view1"], other["view1"])


@pytest.mark.parametrize("cache", [True, False], ids=["scheduled", "union"])
def test_the_view_stream_passes_over_every_row_once_per_epoch(ray_cluster, cache: bool) -> None:
    """Three epochs in one stream, in order, cached (one map over a schedule) or read again
    each epoch (a union of passes): each epoch's rows are the split's rows, each once, and
    every epoch draws new views."""
    dataset = DatasetHandle.open(str(ingest("digits")))
    _, labels = dataset.read("train")
    context = ray.data.DataContext.get_current()
    saved, context.execution_options = context.execution_options, ingest_options(1.0)
    try:
        views = view_dataset(
            dataset, "train", SimCLRPolicy().at_size(8), epochs=range(3), cache=cache
        )
        rows = views.take_all()
    finally:
        context.execution_options = saved
    assert len(rows) == 3 * len(labels)
    epochs = [rows[i * len(labels) : (i + 1) * len(labels)] for i in range(3)]
    for epoch in epochs:
        assert sorted(int(row["label"]) for row in epoch) == sorted(labels.tolist())
    view_sums = [np.stack([row["view1"] for row in epoch]).sum(axis=0) for epoch in epochs]
    assert not np.array_equal(view_sums[0], view_sums[1])
