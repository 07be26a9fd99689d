"""Meta-learning end to end: glyphs shards -> episodes on 2 Ray Train workers (ProtoNet under
DDP, MAML with all-reduced meta-gradients) -> fixed test episodes with 95 % intervals -> MLflow;
then `reprlab eval` of the trained encoder, logged beside its run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from reprlab.cli import app
from reprlab.config import validate_job
from reprlab.data.catalog import ingest
from reprlab.train.prepare import prepare
from reprlab.train.run import run_prepared

pytestmark = pytest.mark.integration


def episodic_job(dataset: Path, method: str, method_args: dict, tasks_per_step: int):
    return validate_job(
        {
            "name": f"itest-{method}",
            "method": method,
            "method_args": method_args,
            "data": {
                "dataset": str(dataset),
                "eval_split": "val",
                "image_size": 28,
                "episodes": {
                    "ways": 5,
                    "shots": 1,
                    "queries": 5,
                    "tasks_per_step": tasks_per_step,
                    "steps_per_epoch": 4,
                },
            },
            "model": {"backbone": "conv4", "width": 16},
            "optim": {"epochs": 2, "warmup_epochs": 0},
            "scaling": {"num_workers": 2},
            "eval": {
                "linear_probe": False,
                "knn": False,
                "online_linear": False,
                "fewshot": {"shots": [1], "episodes": 30, "val_episodes": 10},
            },
            "tracking": {"experiment": "itest-fewshot"},
        }
    )


@pytest.fixture(scope="module")
def glyphs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered once for the module, outside the per-test $REPRLAB_HOME; jobs name its path."""
    return ingest("glyphs", tmp_path_factory.mktemp("datasets"))


def test_protonet_run_then_eval_of_its_encoder(ray_cluster, glyphs: Path) -> None:
    summary = run_prepared(prepare(episodic_job(glyphs, "protonet", {}, tasks_per_step=2)))
    # chance is 0.2; an untrained conv4 already scores ~0.5, so misaligned labels would show
    assert 0.4 < summary.metrics["fewshot/test_5way_1shot_acc"] <= 1.0
    assert 0 < summary.metrics["fewshot/test_5way_1shot_ci95"] < 0.2
    client = MlflowClient(summary.record.tracking_uri)
    run = client.get_run(summary.record.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert {"fewshot/val_5way_1shot_acc", "fewshot/test_5way_1shot_ci95", "train/query_acc"} <= set(
        run.data.metrics
    )
    assert run.data.params["data.episodes.ways"] == "5"
    assert run.data.params["eval.fewshot.episodes"] == "30"
    assert [a.path for a in client.list_artifacts(summary.record.mlflow_run_id, "episodes")] == [
        "episodes/train_episode.png"
    ]
    history = client.get_metric_history(summary.record.mlflow_run_id, "fewshot/val_5way_1shot_acc")
    assert [m.step for m in history] == [1, 2]

    result = CliRunner().invoke(
        app,
        [
            "eval",
            summary.record.run_name,
            "--dataset",
            str(glyphs),
            "--shots",
            "1,5",
            "--episodes",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = client.get_run(summary.record.mlflow_run_id).data.metrics
    for key in ("5way_1shot_proto", "5way_5shot_proto", "5way_5shot_linear"):
        assert 0.4 < metrics[f"fewshot/glyphs/test_{key}_acc"] <= 1.0
        assert f"fewshot/glyphs/test_{key}_ci95" in metrics
    local = client.download_artifacts(
        summary.record.mlflow_run_id, "eval/fewshot_glyphs_test_5way.json"
    )
    record = json.loads(open(local).read())
    assert record["settings"]["episodes"] == 20 and record["settings"]["shots"] == [1, 5]


def test_eval_of_an_unknown_run_is_one_line(glyphs: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "no-such-run", "--dataset", str(glyphs)])
    assert result.exit_code == 2
    assert "no-such-run: not a checkpoint folder" in result.output


def test_maml_on_two_workers_all_reduces_meta_gradients(ray_cluster, glyphs: Path) -> None:
    summary = run_prepared(
        prepare(episodic_job(glyphs, "maml", {"ways": 5, "inner_steps": 1}, tasks_per_step=4))
    )
    assert 0.2 < summary.metrics["fewshot/test_5way_1shot_acc"] <= 1.0
    run = MlflowClient(summary.record.tracking_uri).get_run(summary.record.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["method_args.inner_lr"] == "0.4"
