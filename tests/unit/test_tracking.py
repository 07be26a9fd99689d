"""MLflow tracking against a real SQLite store: where runs go and how they end."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from reprlab.config import JobConfig, flatten, to_yaml
from reprlab.tracking.mlflow import RankZeroLogger, start_run, tracked, tracking_uri


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("REPRLAB_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking_uri()
    yield uri
    mlflow.set_tracking_uri(None)


def test_default_store_is_absolute_sqlite_under_home(store: str, tmp_path: Path) -> None:
    assert store == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_env_uri_wins_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/other.db")
    assert tracking_uri() == "sqlite:////tmp/other.db"


def _start(job: JobConfig, name: str, store: str) -> str:
    return start_run(
        job.tracking.experiment,
        name,
        params=flatten(job),
        config_yaml=to_yaml(job),
        tags={"reprlab.job": job.name},
        uri=store,
    )


def test_run_records_config_and_provenance_and_ends_finished(store: str, tmp_path: Path) -> None:
    job = JobConfig(name="t")
    run_id = _start(job, "t-run", store)
    with tracked(run_id, store):
        RankZeroLogger(run_id, store, rank=0).log({"train/loss": 1.5}, step=1)
        RankZeroLogger(run_id, store, rank=1).log({"train/loss": 9.0}, step=1)
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == str(job.optim.lr)
    assert run.data.tags["version.torch"] and run.data.tags["git.commit"]
    assert run.data.tags["reprlab.job"] == "t"
    history = MlflowClient(store).get_metric_history(run_id, "train/loss")
    assert [m.value for m in history] == [1.5]  # rank 1 wrote nothing
    artifacts = [a.path for a in MlflowClient(store).list_artifacts(run_id, "config")]
    assert artifacts == ["config/job.yaml"]
    assert run.info.artifact_uri.startswith((tmp_path / "artifacts").resolve().as_uri())


def test_a_run_that_raises_ends_failed(store: str) -> None:
    run_id = _start(JobConfig(name="t"), "t-crash", store)
    with pytest.raises(RuntimeError, match="boom"), tracked(run_id, store):
        raise RuntimeError("boom")
    assert MlflowClient(store).get_run(run_id).info.status == "FAILED"
