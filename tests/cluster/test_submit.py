"""`reprlab submit` to a real two-node Ray cluster with token auth, an MLflow server with basic
auth and an S3 endpoint as shared storage: the job runs spread over both nodes, survives losing
one (or ends FAILED with its checkpoint kept when told not to), and its run, metrics, pictures,
model and checkpoints are found where a user would look."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from reprlab.tracking.mlflow import FAILURE_TAG

from .ray_cluster import RayCluster
from .servers import MlflowServer, S3Endpoint, server_environ

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 600
SHORT_JOB = [
    "optim.epochs=2",
    "optim.warmup_epochs=0",
    "scaling.placement=spread",
    "storage.path=s3://reprlab/runs",
]
NO_EVALUATION = [
    "eval.linear_probe=false",
    "eval.knn=false",
    "eval.retrieval=false",
    "eval.clustering=false",
    "tracking.log_model=false",
]
"""For the unrecoverable run: the final evaluation is covered by the test that recovers."""


def reprlab(args: list[str], env: Mapping[str, str], timeout: float = JOB_TIMEOUT_S):
    """Run the `reprlab` command from the project folder with `env` (and no ambient AWS or
    MLflow settings); its completed process."""
    return subprocess.run(
        [sys.executable, "-m", "reprlab.cli", *args],
        cwd=REPO,
        env=server_environ(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def two_nodes(cluster: RayCluster) -> RayCluster:
    """The cluster with its head and one worker node (one is started again when an earlier test
    killed it)."""
    if not cluster.workers:
        cluster.add_worker()
    return cluster


@pytest.fixture
def tracking(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A client of the MLflow server with its credentials."""
    for key, value in mlflow_server.env.items():
        monkeypatch.setenv(key, value)
    return MlflowClient(mlflow_server.url)


def only_run(client: MlflowClient, experiment: str):
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} on the server"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1, [run.info.run_name for run in runs]
    return found, runs[0]


def test_a_bad_job_never_reaches_the_cluster(cluster: RayCluster) -> None:
    done = reprlab(["submit", "jobs/quickstart.yaml", "optim.epochs=0"], cluster.client_env, 60)
    assert done.returncode == 2
    assert "optim.epochs: must be > 0" in done.stdout
    assert "submitted" not in done.stdout


def test_a_wrong_or_missing_token_fails_in_one_line_naming_where_it_looked(
    cluster: RayCluster, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    refused = reprlab(
        ["jobs", "list"], {**cluster.client_env, "RAY_AUTH_TOKEN_PATH": str(wrong)}, 60
    )
    assert refused.returncode == 2
    assert f"refused the Ray token from $RAY_AUTH_TOKEN_PATH={wrong}" in refused.stdout
    assert len(refused.stdout.strip().splitlines()) == 1

    home = tmp_path / "home"
    home.mkdir()
    missing_env = {"RAY_ADDRESS": cluster.dashboard, "HOME": str(home)}
    missing = reprlab(["jobs", "list"], missing_env, 60)
    assert missing.returncode == 2
    assert "requires a Ray token and none was found" in missing.stdout
    assert "$RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH" in missing.stdout


def submitted_id(follower: subprocess.Popen, timeout: float = 120) -> str:
    """The submission id `reprlab submit` prints, read from its output as it comes."""
    deadline = time.monotonic() + timeout
    for line in follower.stdout:
        if match := re.search(r"submitted (raysubmit_\w+)", line):
            return match.group(1)
        assert time.monotonic() < deadline, "reprlab submit printed no submission id"
    raise AssertionError(f"reprlab submit ended ({follower.wait()}) without a submission id")


def wait_for_epoch(client: MlflowClient, experiment: str, epoch: int, timeout: float) -> None:
    """Until the experiment's run has recorded `epoch` (its train/loss at that step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id]) if found else []
        if runs and runs[0].data.metrics.get("epoch", 0) >= epoch:
            return
        time.sleep(1)
    raise AssertionError(f"no run of {experiment!r} reached epoch {epoch} in {timeout:.0f}s")


EPOCHS = 20
"""Epochs of the elastic run, so its node is lost mid-run: with the channels-last conv4 its
epochs take about 10 s after the first, and all of 7 ran within 90 s of epoch 1, before the
loss landed."""


def test_a_submitted_job_spreads_outlives_its_follower_and_goes_on_with_fewer_after_a_lost_node(
    two_nodes: RayCluster, s3: S3Endpoint, mlflow_server: MlflowServer, tracking: MlflowClient
) -> None:
    env = {**two_nodes.client_env, **mlflow_server.env}
    uploaded = reprlab(["ingest", "mnist5k", "--out", "s3://reprlab/datasets"], s3.env, 120)
    assert "-> s3://reprlab/datasets/mnist5k" in uploaded.stdout, uploaded.stdout + uploaded.stderr
    dataset = "s3://reprlab/datasets/mnist5k"  # every node's Ray Data tasks read it from S3
    job = [
        *SHORT_JOB,
        f"optim.epochs={EPOCHS}",
        "data.batch_size=256",  # 15 steps an epoch: the node is lost mid-run
        f"data.dataset={dataset}",
        "scaling.num_workers=[1,2]",  # elastic: 2 while both nodes live, 1 on the node left
        "scaling.cpus_per_worker=2",
        "scaling.max_failures=1",
        "tracking.experiment=cluster-submit",
    ]
    follower = subprocess.Popen(
        [sys.executable, "-m", "reprlab.cli", "submit", "jobs/quickstart.yaml", "--follow", *job],
        cwd=REPO,
        env=server_environ({**env, "PYTHONFAULTHANDLER": "1"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        submission = submitted_id(follower)
        link = next(line for line in follower.stdout if line.startswith("MLflow: "))
        next(follower.stdout)  # the job's own log is streaming: now the user's Ctrl-C
        follower.send_signal(signal.SIGINT)
        try:
            rest, _ = follower.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            follower.send_signal(signal.SIGABRT)  # the fault handler prints every thread's stack
            stacks, _ = follower.communicate(timeout=30)
            pytest.fail(f"no exit 60 s after Ctrl-C; where it waited:\n{stacks[-6000:]}")
    finally:
        follower.kill()
    assert follower.returncode == 130, rest[-2000:]
    assert f"reprlab jobs logs {submission} --follow" in rest
    status = reprlab(["jobs", "status", submission], env, 60)
    assert status.stdout.startswith(f"{submission}: RUNNING") or "PENDING" in status.stdout

    wait_for_epoch(tracking, "cluster-submit", 1, timeout=400)
    two_nodes.lose_a_worker()

    resumed = reprlab(["jobs", "logs", submission, "--follow"], env)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert f"{submission}: SUCCEEDED" in resumed.stdout
    experiment, run = only_run(tracking, "cluster-submit")
    assert run.info.status == "FINISHED"
    assert f"#/experiments/{experiment.experiment_id}" in link
    for key in ("train/loss", "epoch", "online_linear_acc"):
        steps = [m.step for m in tracking.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), f"{key}: {sorted(steps)}"
    nodes = {m.step: m.value for m in tracking.get_metric_history(run.info.run_id, "train/nodes")}
    assert nodes[1] == 2.0, f"the 2 workers were not spread: {nodes}"
    assert nodes[EPOCHS] == 1.0, f"the last epoch did not run on the node left: {nodes}"
    workers = tracking.get_metric_history(run.info.run_id, "train/workers")
    workers = {m.step: m.value for m in workers}
    assert (workers[1], workers[EPOCHS]) == (2.0, 1.0), f"not elastic: {workers}"
    assert run.data.metrics["eval/linear_probe_acc"] > 0.5
    [used] = run.inputs.dataset_inputs
    assert used.dataset.name == "mnist5k" and dataset in used.dataset.source
    pictures = [a.path for a in tracking.list_artifacts(run.info.run_id, "augment")]
    assert pictures == ["augment/view_pairs.png"]
    models = tracking.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert [model.source_run_id for model in models] == [run.info.run_id]
    listing = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"runs/{run.info.run_name}/")
    keys = [item["Key"] for item in listing.get("Contents", [])]
    assert any(key.endswith("/state.pt") and "/checkpoint_" in key for key in keys), keys

    # from the user's machine, whose REPRLAB_HOME has no run folder: the run record comes
    # from the MLflow server, the checkpoint from S3, and the score goes back to the run
    assert reprlab(["ingest", "glyphs"], {}, 120).returncode == 0
    scored = reprlab(
        ["eval", run.info.run_id, "--shots", "1", "--queries", "2", "--episodes", "4"],
        {**s3.env, **mlflow_server.env},
        300,
    )
    assert scored.returncode == 0, (scored.stdout + scored.stderr)[-4000:]
    scores = tracking.get_run(run.info.run_id).data.metrics
    assert "fewshot/glyphs/test_5way_1shot_proto_acc" in scores, sorted(scores)


def test_a_run_ray_cannot_recover_ends_failed_with_why_and_keeps_its_checkpoint(
    two_nodes: RayCluster, s3: S3Endpoint, mlflow_server: MlflowServer, tracking: MlflowClient
) -> None:
    env = {**two_nodes.client_env, **mlflow_server.env}
    job = [
        *SHORT_JOB,
        *NO_EVALUATION,
        "optim.epochs=8",  # still training when its node is lost, however slow the epochs
        "scaling.max_failures=0",
        "tracking.experiment=cluster-unrecoverable",
    ]
    submitted = reprlab(["submit", "jobs/quickstart.yaml", *job], env, 120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    submission = re.search(r"submitted (raysubmit_\w+)", submitted.stdout).group(1)
    wait_for_epoch(tracking, "cluster-unrecoverable", 1, timeout=400)
    two_nodes.lose_a_worker()

    ended = reprlab(["jobs", "logs", submission, "--follow"], env)
    assert ended.returncode == 1, (ended.stdout + ended.stderr)[-4000:]
    assert f"{submission}: FAILED" in ended.stdout
    _, run = only_run(tracking, "cluster-unrecoverable")
    assert run.info.status == "FAILED"
    assert run.data.tags[FAILURE_TAG].startswith(("TrainingFailedError", "WorkerGroupError"))
    listing = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"runs/{run.info.run_name}/")
    kept = [item["Key"] for item in listing.get("Contents", [])]
    assert any(key.endswith("/state.pt") for key in kept), "the last checkpoint was not kept"
