"""MLflow tracking against a real SQLite store: where runs go and how they end."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from reprlab.config import JobConfig, flatten, to_yaml, validate_job
from reprlab.data.catalog import ingest
from reprlab.data.handle import DatasetHandle
from reprlab.tracking.mlflow import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    FAILURE_TAG,
    DatasetInput,
    RankZeroLogger,
    failure_reason,
    git_tags,
    log_dataset,
    start_run,
    tracked,
    tracking_uri,
)
from reprlab.tracking.ui import runs_view_url, ui_experiment_id
from reprlab.train.prepare import prepare
from reprlab.train.run import open_record


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
    assert run.data.tags["version.torch"]
    assert run.data.tags["reprlab.job"] == "t"
    history = MlflowClient(store).get_metric_history(run_id, "train/loss")
    assert [m.value for m in history] == [1.5]  # rank 1 wrote nothing
    artifacts = [a.path for a in MlflowClient(store).list_artifacts(run_id, "config")]
    assert artifacts == ["config/job.yaml"]
    assert run.info.artifact_uri.startswith((tmp_path / "artifacts").resolve().as_uri())


def test_a_run_that_raises_ends_failed(store: str) -> None:
    run_id = _start(JobConfig(name="t"), "t-crash", store)
    with pytest.raises(RuntimeError, match="boom"), tracked(run_id, store):
        raise RuntimeError("\nboom: the worker group died\n  Traceback (most recent call last):")
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[FAILURE_TAG] == "RuntimeError: boom: the worker group died"


def test_an_interrupted_run_says_so() -> None:
    assert failure_reason(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert len(failure_reason(ValueError("x" * 2000))) == 500


def test_a_new_experiment_opens_on_its_runs_in_mlflows_ui(store: str) -> None:
    run_id = _start(JobConfig(name="t"), "t-run", store)
    client = MlflowClient(store)
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"


def test_an_existing_experiment_without_a_kind_gets_it_and_another_kind_is_kept(
    store: str,
) -> None:
    client = MlflowClient(store)
    plain = client.create_experiment("plain")
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    for name in ("plain", "chosen"):
        _start(JobConfig(name="t", tracking={"experiment": name}), f"{name}-run", store)
    assert client.get_experiment(plain).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_a_run_carries_mlflows_own_source_tags(store: str) -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    tags = MlflowClient(store).get_run(_start(JobConfig(name="t"), "t-run", store)).data.tags
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.git.dirty"] in ("true", "false")
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"] == sys.argv[0]
    assert "git.commit" not in tags


def test_outside_a_git_checkout_there_are_no_git_tags(tmp_path: Path) -> None:
    assert git_tags(tmp_path) == {}


def _digits_job() -> JobConfig:
    return validate_job(
        {
            "name": "inputs",
            "data": {"dataset": "digits", "image_size": 8},
            "tracking": {"experiment": "inputs"},
        }
    )


def test_a_run_logs_its_dataset_as_its_training_input_once(store: str) -> None:
    ingest("digits")
    prepared = prepare(_digits_job())
    record = open_record(prepared)
    inputs = MlflowClient(store).get_run(record.mlflow_run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.name == "digits" and dataset.digest == prepared.dataset.digest
    assert json.loads(dataset.source) == {"uri": str(prepared.dataset.path.resolve())}
    assert dataset.source_type == "local"
    assert json.loads(dataset.profile) == {
        "num_rows": 1797,
        "split_sizes": {"train": 1437, "test": 360},
    }
    assert {t.key: t.value for t in inputs[0].tags} == {"mlflow.data.context": "training"}

    again = open_record(prepare(_digits_job(), resume=prepared.run_name))
    assert again.mlflow_run_id == record.mlflow_run_id
    assert len(MlflowClient(store).get_run(record.mlflow_run_id).inputs.dataset_inputs) == 1


def test_a_resumed_run_keeps_the_input_it_started_with(store: str) -> None:
    job = JobConfig(name="t")
    first = DatasetInput("digits", "/data/digits", "aaaa", {"train": 3})
    run_id = start_run(
        "t", "t-run", params={}, config_yaml=to_yaml(job), tags={}, uri=store, dataset=first
    )
    changed = DatasetInput("digits", "/data/digits", "bbbb", {"train": 4})
    start_run(
        "t", "t-run", params={}, config_yaml="", tags={}, uri=store, run_id=run_id, dataset=changed
    )
    inputs = MlflowClient(store).get_run(run_id).inputs.dataset_inputs
    assert [i.dataset.digest for i in inputs] == ["aaaa"]


def test_the_dataset_digest_follows_every_shards_checksum() -> None:
    handle = DatasetHandle.open(str(ingest("digits")))
    assert len(handle.digest) == 16 and handle.digest == DatasetHandle.open("digits").digest
    shards = [dict(shard) for shard in handle.manifest["shards"]]
    shards[-1]["sha256"] = "0" * 64
    changed = DatasetHandle(handle.path, {**handle.manifest, "shards": shards})
    assert changed.digest != handle.digest


def test_the_runs_view_url_opens_model_training_mode() -> None:
    assert (
        runs_view_url("http://127.0.0.1:5000", "7")
        == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    )
    assert (
        runs_view_url("https://mlflow.example.org/team/", "12")
        == "https://mlflow.example.org/team/#/experiments/12/runs?workflowType=machine_learning"
    )


def test_the_ui_shows_the_experiment_reprlab_wrote_to_last(store: str) -> None:
    client = MlflowClient(store)
    quickstart = ui_experiment_id(store)  # an empty store: the quickstart's, made ready
    assert client.get_experiment(quickstart).name == "quickstart"
    assert client.get_experiment(quickstart).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    for name in ("older", "newer"):
        _start(JobConfig(name="t", tracking={"experiment": name}), f"{name}-run", store)
    client.create_run(client.create_experiment("not-reprlab"))  # newest, but not reprlab's
    newer = client.get_experiment_by_name("newer").experiment_id
    assert ui_experiment_id(store) == newer
    assert ui_experiment_id(store, "older") == client.get_experiment_by_name("older").experiment_id
    with pytest.raises(ValueError, match="--experiment: no experiment named 'gone'"):
        ui_experiment_id(store, "gone")


def _log_at_once(store: str, run_ids: list[str], dataset: DatasetInput) -> list[Exception]:
    """Each run logs `dataset` from its own thread, all released together; the errors."""
    together = threading.Barrier(len(run_ids))
    errors: list[Exception] = []

    def log_input(run_id: str) -> None:
        together.wait()
        try:
            log_dataset(MlflowClient(store), run_id, dataset)
        except Exception as error:  # noqa: BLE001 - collected for the test's assertion
            errors.append(error)

    threads = [threading.Thread(target=log_input, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_runs_logging_the_same_new_dataset_at_once_all_get_it_as_their_input(store: str) -> None:
    client = MlflowClient(store)
    experiment_id = client.create_experiment("race")
    for round_ in range(6):
        runs = [client.create_run(experiment_id).info.run_id for _ in range(4)]
        dataset = DatasetInput("d", "/data/d", f"digest{round_}", {"train": 1})
        assert _log_at_once(store, runs, dataset) == []
        for run_id in runs:
            inputs = client.get_run(run_id).inputs.dataset_inputs
            assert [i.dataset.digest for i in inputs] == [f"digest{round_}"]


def test_a_run_that_fails_while_being_opened_ends_failed_with_the_reason(store: str) -> None:
    too_long = "k" * 300  # over MLflow's limit on a param key
    with pytest.raises(MlflowException):
        start_run("t", "t-run", params={too_long: 1}, config_yaml="", tags={}, uri=store)
    (run,) = MlflowClient(store).search_runs([mlflow.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags[FAILURE_TAG].startswith("MlflowException")
