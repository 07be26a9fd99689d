"""`reprlab eval RUN --protocol finetune` end to end: an RGB encoder recorded as a finished run is
fine-tuned on the grey digits with 2 labels per class and with all of them, each a Ray Train run
that is a child of the evaluated run, whose MLflow run receives both accuracies."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from reprlab.cli import app
from reprlab.config import validate_job
from reprlab.data.catalog import ingest
from reprlab.runs import RunRecord, runs_root
from reprlab.tracking.mlflow import tracking_uri
from reprlab.train.build import make_training_module
from reprlab.train.checkpoint import TrainState, save_checkpoint
from reprlab.train.optim import make_optimizer

pytestmark = pytest.mark.integration


def _finished_rgb_run(name: str) -> RunRecord:
    """A SimCLR run on 3-channel 16x16 images (conv4 width 8) with one checkpoint, recorded in
    MLflow like a finished run."""
    job = validate_job(
        {
            "name": name,
            "model": {"width": 8},
            "data": {"image_size": 16, "batch_size": 32},
            "scaling": {"num_workers": 2},
            "tracking": {"experiment": "pretrained"},
        }
    )
    uri = tracking_uri()
    # the client, not mlflow's fluent API: its active experiment would outlive this test's home
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("pretrained"), run_name=name).info.run_id
    client.set_terminated(run_id)
    record = RunRecord(name, runs_root() / name, job, 3, 10, run_id, uri)
    record.save()
    torch.manual_seed(0)
    module = make_training_module(job, 3, 10)
    folder = record.storage / "checkpoint_2026-12-07_00-00-00.000000"
    folder.mkdir()
    save_checkpoint(folder, module, make_optimizer(job, module), TrainState(1, 1))
    return record


def test_finetune_protocol_transfers_an_rgb_encoder_to_grey_digits(ray_cluster) -> None:
    ingest("digits")
    record = _finished_rgb_run("rgb-encoder")
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "rgb-encoder",
            "--protocol",
            "finetune",
            "--dataset",
            "digits",
            "--labels-per-class",
            "2,all",
            "--epochs",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient(record.tracking_uri)
    evaluated = client.get_run(record.mlflow_run_id).data.metrics
    children = client.search_runs(
        [client.get_experiment_by_name("pretrained").experiment_id],
        f"tags.`mlflow.parentRunId` = '{record.mlflow_run_id}'",
    )
    by_labels = {run.data.params["data.labels_per_class"]: run for run in children}
    assert sorted(by_labels) == ["2", "None"]
    assert by_labels["2"].data.params["data.labelled_rows"] == "20"
    for labels, run in (("2", by_labels["2"]), ("all", by_labels["None"])):
        accuracy = run.data.metrics["eval/classifier_acc"]
        assert evaluated[f"finetune/digits/{labels}_acc"] == accuracy
    assert {run.data.params["model.init_from"] for run in children} == {
        str(record.latest_checkpoint())
    }
    assert all(run.info.status == "FINISHED" for run in children)
    path = client.download_artifacts(record.mlflow_run_id, "eval/finetune_digits.json")
    with open(path) as handle:
        logged = json.load(handle)
    assert logged["settings"]["labels_per_class"] == ["2", "all"]
    assert set(logged["settings"]["runs"]) == {"2", "all"}
