"""The cluster path without a cluster: what a submission carries, where the token comes from,
what a multi-node cluster refuses, and where checkpoints are found."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from reprlab.cluster.auth import default_token_path, find_token
from reprlab.cluster.submit import (
    UPLOAD_EXCLUDES,
    SweepOptions,
    build_submission,
    exit_code,
    project_relative,
)
from reprlab.config import ConfigError, load_job
from reprlab.data.catalog import ingest
from reprlab.storage import POSITION_FILE, checkpoint_dirs, epoch_to_resume, local_checkpoint
from reprlab.train.placement import cluster_problem
from reprlab.train.prepare import prepare
from reprlab.train.trainer import build_trainer

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "jobs" / "quickstart.yaml"


def test_a_submission_uploads_the_project_and_runs_the_same_command_there(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-forwarded")
    overrides = ["optim.epochs=3", "tracking.experiment=my exp"]
    job = load_job(QUICKSTART, overrides)
    submission = build_submission(job, QUICKSTART, overrides, REPO)
    ingest, run = submission.entrypoint.split(" && ")
    assert shlex.split(ingest) == ["python", "-m", "reprlab.cli", "ingest", "mnist5k"]
    assert shlex.split(run) == [
        "python", "-m", "reprlab.cli", "run", "jobs/quickstart.yaml", *overrides,
    ]  # fmt: skip
    env = submission.runtime_env
    assert env["working_dir"] == str(REPO)
    assert env["py_modules"] == [str(REPO / "platform" / "reprlab")]
    assert ".venv" in env["excludes"] and ".git" in env["excludes"]
    assert env["env_vars"] == {"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"}
    assert submission.metadata == {"reprlab.job": "quickstart", "reprlab.command": "run"}


def test_a_sweep_submission_runs_reprlab_tune_with_its_space() -> None:
    job = load_job(QUICKSTART, [])
    sweep = SweepOptions(REPO / "tune_spaces" / "simclr_temperature.yaml", samples=6)
    submission = build_submission(job, QUICKSTART, ["optim.epochs=10"], REPO, sweep)
    command = shlex.split(submission.entrypoint.split(" && ")[-1])
    assert command[3:] == [
        "tune", "jobs/quickstart.yaml", "--space", "tune_spaces/simclr_temperature.yaml",
        "--samples", "6", "optim.epochs=10",
    ]  # fmt: skip
    assert submission.metadata["reprlab.command"] == "tune"


def test_a_job_file_outside_the_uploaded_project_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "job.yaml"
    with pytest.raises(ConfigError, match=r"JOB_FILE: .*job.yaml is outside the project folder"):
        project_relative(outside, REPO, "JOB_FILE")


def test_the_upload_leaves_state_and_environments_behind() -> None:
    for kept_out in (".venv", ".git", "mlruns", "*.db", "test-artifacts"):
        assert kept_out in UPLOAD_EXCLUDES


@pytest.mark.parametrize(("status", "code"), [("SUCCEEDED", 0), ("FAILED", 1), ("STOPPED", 1)])
def test_the_exit_status_mirrors_the_job(status: str, code: int) -> None:
    assert exit_code(status) == code


def test_the_token_comes_from_rays_places_in_rays_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert find_token() is None
    default_token_path().parent.mkdir()
    default_token_path().write_text("home-token\n")
    assert (find_token().value, find_token().source) == ("home-token", str(default_token_path()))
    named = tmp_path / "named"
    named.write_text("path-token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    assert find_token().value == "path-token"
    assert find_token().source == f"$RAY_AUTH_TOKEN_PATH={named}"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-token")
    assert (find_token().value, find_token().source) == ("env-token", "$RAY_AUTH_TOKEN")
    assert "env-token" not in repr(find_token().source)


def test_a_named_token_file_that_is_missing_is_no_token(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "absent"))
    assert find_token() is None


@pytest.mark.parametrize(
    ("overrides", "uri", "nodes", "expected"),
    [
        ([], "sqlite:///x.db", 1, None),
        ([], "http://mlflow:5000", 2, "storage.path: the cluster has 2 nodes"),
        (["storage.path=/local/runs"], "http://mlflow:5000", 3, "storage.path: the cluster"),
        (["storage.path=s3://b/runs"], "sqlite:///x.db", 2, "tracking.tracking_uri: the cl"),
        (["storage.path=s3://b/runs"], "http://mlflow:5000", 2, None),
        (["storage.path=/nfs/runs", "storage.shared=true"], "https://mlflow", 2, None),
    ],
)
def test_a_cluster_of_several_nodes_refuses_node_local_storage_and_stores(
    overrides: list[str], uri: str, nodes: int, expected: str | None
) -> None:
    problem = cluster_problem(load_job(QUICKSTART, overrides), uri, nodes)
    if expected is None:
        assert problem is None
    else:
        assert problem.startswith(expected) and "\n" not in problem


def write_checkpoint(run: Path, name: str, epoch: int, complete: bool = True) -> Path:
    folder = run / name
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(b"weights")
    if complete:
        (folder / POSITION_FILE).write_text(json.dumps({"epoch": epoch, "step": epoch * 10}))
    return folder


def test_checkpoints_are_found_newest_last_and_incomplete_ones_skipped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert checkpoint_dirs(run) == [] and epoch_to_resume(run) == 0
    write_checkpoint(run, "checkpoint_2026-11-29_10-00-01.000001", 1)
    newest = write_checkpoint(run, "checkpoint_2026-11-29_10-00-09.000001", 2)
    write_checkpoint(run, "checkpoint_2026-11-29_10-00-19.000001", 3, complete=False)
    (run / "not_a_checkpoint").mkdir()
    found = checkpoint_dirs(run)
    assert [Path(path).name for path in found] == [
        "checkpoint_2026-11-29_10-00-01.000001",
        "checkpoint_2026-11-29_10-00-09.000001",
    ]
    assert epoch_to_resume(run) == 2
    assert local_checkpoint(found[-1], tmp_path / "cache") == newest


def test_the_trainer_gets_the_jobs_workers_placement_failures_and_storage(
    digits_prepared,
) -> None:
    trainer = build_trainer(digits_prepared, plan=None, datasets={})
    assert trainer.scaling_config.num_workers == (1, 2)
    assert trainer.scaling_config.placement_strategy == "SPREAD"
    assert trainer.run_config.failure_config.max_failures == 2
    assert trainer.run_config.storage_path == "s3://bucket/runs"
    assert digits_prepared.checkpoints == f"s3://bucket/runs/{digits_prepared.run_name}"


@pytest.fixture
def digits_prepared():
    ingest("digits")
    job = load_job(
        QUICKSTART,
        [
            "data.dataset=digits",
            "data.image_size=8",
            "scaling.num_workers=[1,2]",
            "scaling.placement=spread",
            "scaling.max_failures=2",
            "storage.path=s3://bucket/runs",
        ],
    )
    return prepare(job)
