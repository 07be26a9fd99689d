"""A classical baseline as a whole run without Ray: fitted on the driver, checkpointed where a
trained run's checkpoints go, evaluated and recorded in MLflow like any run, and scored again by
`reprlab eval --protocol retrieval|clustering`."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from reprlab.cli import app
from reprlab.config import validate_job
from reprlab.data.catalog import ingest
from reprlab.runs import find_trained
from reprlab.train.build import load_trained_method
from reprlab.train.prepare import prepare
from reprlab.train.run import run_prepared


def pca_job() -> dict:
    return {
        "name": "pca_digits",
        "method": "pca",
        "method_args": {"components": 16},
        "data": {"dataset": "digits", "image_size": 8},
        "model": {"backbone": "pixels"},
        "eval": {"online_linear": False},
        "tracking": {"experiment": "classical"},
    }


@pytest.fixture
def pca_run():
    ingest("digits")
    return run_prepared(prepare(validate_job(pca_job())))


def test_a_pca_run_is_fitted_recorded_and_evaluated_like_a_trained_one(pca_run) -> None:
    client = MlflowClient(pca_run.record.tracking_uri)
    run = client.get_run(pca_run.record.mlflow_run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert 0.5 < metrics["fit/explained_variance"] < 1.0
    assert metrics["eval/linear_probe_acc"] > 0.85  # 8x8 digits: PCA-16 keeps what a probe needs
    for key in ("precision_at_1", "map_at_r", "r_precision", "recall_at_8"):
        assert 0 < metrics[f"eval/retrieval_{key}"] <= 1
    for key in ("acc", "nmi", "ari"):
        assert 0 < metrics[f"eval/clustering_{key}"] <= 1
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "pca")}
    assert "pca/eigen_images.png" in artifacts

    record, checkpoint = find_trained(pca_run.record.run_name)
    method = load_trained_method(record, checkpoint)
    assert method.backbone.components.abs().sum() > 0  # the fitted buffers, not zeros


def test_eval_protocols_score_a_run_again_and_log_into_it(pca_run) -> None:
    name = pca_run.record.run_name
    result = CliRunner().invoke(app, ["eval", name, "--protocol", "clustering", "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "clustering on digits/test" in result.output
    result = CliRunner().invoke(app, ["eval", name, "--protocol", "retrieval", "--split", "test"])
    assert result.exit_code == 0, result.output
    metrics = MlflowClient(pca_run.record.tracking_uri).get_run(pca_run.record.mlflow_run_id)
    logged = metrics.data.metrics
    assert logged["clustering/digits/test_acc"] == pytest.approx(
        logged["eval/clustering_acc"], abs=1e-9
    )  # the same split, seed and features as the run's own evaluation
    assert logged["retrieval/digits/test_map_at_r"] == pytest.approx(
        logged["eval/retrieval_map_at_r"], abs=1e-9
    )


def test_an_unknown_protocol_is_refused_in_one_line() -> None:
    result = CliRunner().invoke(app, ["eval", "nowhere", "--protocol", "recall"])
    assert result.exit_code != 0
    assert "--protocol: allowed: fewshot, retrieval, clustering, finetune, got 'recall'" in (
        result.output
    )
