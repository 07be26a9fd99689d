"""The `reprlab` command: help for every verb, and bad input refused before Ray starts."""

from __future__ import annotations

import socket
import webbrowser
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from reprlab.cli import app
from reprlab.home import reprlab_home
from reprlab.tracking import ui as tracking_ui
from reprlab.tracking.mlflow import tracking_uri

runner = CliRunner()
QUICKSTART = str(Path(__file__).parents[2] / "jobs" / "quickstart.yaml")


@pytest.mark.parametrize(
    "verb", ["ingest", "datasets", "run", "pipeline", "eval", "augment-preview", "ui"]
)
def test_every_verb_has_help(verb: str) -> None:
    result = runner.invoke(app, [verb, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_bad_override_fails_fast_with_one_line() -> None:
    result = runner.invoke(app, ["run", QUICKSTART, "optim.lr=-1"])
    assert result.exit_code == 2
    assert "optim.lr: must be > 0.0, got -1" in result.output


def test_a_pipeline_whose_stage_has_no_dataset_fails_before_anything_runs() -> None:
    """The shipped Noisy Student pipeline on a home without mnist5k: one line, nothing
    recorded (no parent run, no pipeline record)."""
    pipeline = Path(QUICKSTART).parent / "semi" / "noisy_student_pipeline_mnist5k.yaml"
    result = runner.invoke(app, ["pipeline", str(pipeline)])
    assert result.exit_code == 2
    assert "reprlab ingest mnist5k" in result.output
    assert not (reprlab_home() / "pipelines").exists()
    assert not (reprlab_home() / "mlflow.db").exists()


def test_finetune_protocol_of_an_unknown_run_fails_in_one_line() -> None:
    result = runner.invoke(app, ["eval", "nowhere", "--protocol", "finetune"])
    assert result.exit_code == 2 and "nowhere: not a checkpoint folder" in result.output


def test_run_on_a_dataset_not_ingested_says_how_to_ingest() -> None:
    result = runner.invoke(app, ["run", QUICKSTART, "data.dataset=digits"])
    assert result.exit_code == 2
    assert "reprlab ingest digits" in result.output


def test_ingest_then_datasets_lists_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", "digits", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "train 1437, test 360" in result.output
    listing = runner.invoke(app, ["datasets", "--root", str(tmp_path)])
    assert "digits" in listing.output and "1437" in listing.output


def test_unknown_dataset_name() -> None:
    result = runner.invoke(app, ["ingest", "imagenet"])
    assert result.exit_code == 2
    assert "unknown dataset 'imagenet'" in result.output


def test_split_missing_from_the_dataset_fails_before_ray(tmp_path: Path) -> None:
    runner.invoke(app, ["ingest", "digits"])
    result = runner.invoke(app, ["run", QUICKSTART, "data.dataset=digits", "data.eval_split=val"])
    assert result.exit_code == 2
    assert "data.eval_split: 'val' is not a split of digits; allowed: train, test" in result.output


def test_resume_of_an_unknown_run_fails_before_ray() -> None:
    runner.invoke(app, ["ingest", "digits"])
    result = runner.invoke(
        app, ["run", QUICKSTART, "data.dataset=digits", "--resume", "no-such-run"]
    )
    assert result.exit_code == 2
    assert "--resume: no run named 'no-such-run'" in result.output


@pytest.mark.parametrize(
    "job,policy",
    [("quickstart", "simclr"), ("byol_mnist5k", "byol"), ("quickstart", "randaugment")],
)
def test_augment_preview_writes_a_png_of_the_jobs_views(
    tmp_path: Path, job: str, policy: str
) -> None:
    runner.invoke(app, ["ingest", "digits"])
    out = tmp_path / "preview" / "views.png"
    job_file = str(Path(QUICKSTART).parent / f"{job}.yaml")
    overrides = ["data.dataset=digits", "data.image_size=16", f"data.augment.policy={policy}"]
    result = runner.invoke(
        app, ["augment-preview", job_file, *overrides, "--out", str(out), "--pairs", "3"]
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_augment_preview_of_a_bad_job_fails_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "views.png"
    override = "data.augment.blur_p=2"
    result = runner.invoke(app, ["augment-preview", QUICKSTART, override, "--out", str(out)])
    assert result.exit_code == 2
    assert "data.augment.blur_p: must be <= 1.0, got 2" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_a_run_without_workers_fails_before_anything_is_recorded() -> None:
    from reprlab.data.catalog import ingest

    ingest("digits")
    result = runner.invoke(app, ["run", QUICKSTART, "data.dataset=digits", "scaling.num_workers=0"])
    assert result.exit_code == 2
    assert "scaling.num_workers: a whole run needs >= 1 Ray Train worker" in result.output
    assert not (reprlab_home() / "runs").exists() and not (reprlab_home() / "mlflow.db").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_ui_opens_the_runs_view_on_localhost_and_ctrl_c_stops_the_server(monkeypatch) -> None:
    opened, servers, listening = [], [], set()

    def user_opens_then_presses_ctrl_c(url: str) -> None:
        opened.append(url)
        servers.extend(psutil.Process().children(recursive=True))
        for process in servers:
            try:
                connections = process.net_connections(kind="inet")
            except psutil.NoSuchProcess:  # a short-lived helper the server spawned
                continue
            listening.update(c.laddr for c in connections if c.status == psutil.CONN_LISTEN)
        raise KeyboardInterrupt

    monkeypatch.setattr(webbrowser, "open", user_opens_then_presses_ctrl_c)
    port = _free_port()
    result = runner.invoke(app, ["ui", "--port", str(port), "--open"])
    quickstart = MlflowClient(tracking_uri()).get_experiment_by_name("quickstart")
    url = f"http://127.0.0.1:{port}/#/experiments/{quickstart.experiment_id}/runs"
    assert opened == [f"{url}?workflowType=machine_learning"], result.output
    assert opened[0] in result.output and result.exit_code == 130
    assert ("127.0.0.1", port) in listening and {ip for ip, _ in listening} == {"127.0.0.1"}
    assert servers and not [p for p in servers if _alive(p)]


def test_ui_on_an_mlflow_server_prints_its_runs_view_and_starts_nothing(monkeypatch) -> None:
    monkeypatch.setattr(tracking_ui, "ui_experiment_id", lambda uri, name: f"{name}-id")
    uri = "http://10.1.2.3:5000/"
    result = runner.invoke(app, ["ui", "--tracking-uri", uri, "--experiment", "x"])
    assert result.exit_code == 0, result.output
    assert "http://10.1.2.3:5000/#/experiments/x-id/runs?workflowType=machine_learning" in (
        result.output
    )
    assert not psutil.Process().children(recursive=True)


def test_ui_of_an_unknown_experiment_fails_with_one_line() -> None:
    result = runner.invoke(app, ["ui", "--experiment", "nope"])
    assert result.exit_code == 2
    error = f"error: --experiment: no experiment named 'nope' in {tracking_uri()}"
    assert result.output.strip().splitlines()[-1] == error  # above it: MLflow's store set-up
