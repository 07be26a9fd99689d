"""Real sweeps on the real local Ray and a real MLflow store, on the small digits set: ASHA over a
grid (parent and child runs, early stops, plots, the best encoder registered), PBT whose
exploits really copy the donor's weights, and a driver killed mid-sweep then resumed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from reprlab.data.catalog import ingest
from reprlab.runs import runs_root
from reprlab.storage import STATE_FILE, checkpoint_epoch
from reprlab.train.checkpoint import checkpoint_digest
from reprlab.tune.results import trial_id_in
from reprlab.tune.run import run_sweep
from reprlab.tune.sweep import SweepRecord, SweepSettings, plan_sweep, sweeps_root
from reprlab.tune.trial import SCHEDULE_PREFIX, WEIGHTS_TRACE, trial_run_name

pytestmark = pytest.mark.integration

JOB = """
name: tune_itest
method: simclr
data: {dataset: digits, image_size: 16, batch_size: 64, data_cpus: 0.5}
model: {backbone: conv4, width: 8}
optim: {epochs: 3, warmup_epochs: 0}
scaling: {num_workers: 1, cpus_per_worker: 0.5}
eval: {linear_probe: true, knn: false, online_linear_lr: 0.1}
tracking: {experiment: tune_itest, augment_grid_pairs: 0}
"""


def write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def children(client: MlflowClient, parent_run_id: str) -> list:
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )


def test_asha_sweep_records_a_parent_with_one_child_per_trial(ray_cluster, tmp_path) -> None:
    ingest("digits")
    # train/lr after epoch 1 grows with optim.lr: a metric whose ranking is known in advance,
    # so ASHA's decisions are too (whichever two trials run first, 0.0005 reaches the first
    # rung below the cutoff)
    space = write(
        tmp_path,
        "lr.yaml",
        "description: learning rates\nmetric: train/lr\nmode: max\n"
        "params:\n  optim.lr: {grid: [0.004, 0.001, 0.0005]}\n",
    )
    settings = SweepSettings(
        job_file=write(tmp_path, "job.yaml", JOB),
        space_file=space,
        search="grid",
        samples=1,
        register="tune_itest_encoder",
    )
    plan = plan_sweep(settings)
    summary = run_sweep(plan)

    client = MlflowClient(summary.record.tracking_uri)
    parent = client.get_run(summary.record.parent_run_id)
    assert parent.info.status == "FINISHED"
    [used] = parent.inputs.dataset_inputs  # logged before trials that start together
    assert used.dataset.name == "digits"
    runs = children(client, parent.info.run_id)
    assert len(runs) == 3
    assert sorted(float(run.data.params["optim.lr"]) for run in runs) == [0.0005, 0.001, 0.004]
    stopped = 0
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        history = client.get_metric_history(run.info.run_id, "train/lr")
        epochs = len(history)
        assert epochs >= 1
        if epochs < plan.job.optim.epochs:
            stopped += 1
            assert run.data.tags.get("stopped_early") == "true"
        else:
            assert "stopped_early" not in run.data.tags
            assert run.data.metrics["eval/linear_probe_acc"] > 0.2  # the trial's own evaluation
    assert stopped >= 1
    assert parent.data.params["best.optim.lr"] == "0.004"
    assert parent.data.metrics["best/train/lr"] == pytest.approx(summary.best.metric)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {
        "sweep/results.csv",
        "sweep/curves.png",
        "sweep/metric_against_values.png",
        "sweep/lr.yaml",
    } <= artifacts
    version = client.get_model_version_by_alias("tune_itest_encoder", "best")
    assert int(version.version) == 1
    assert summary.command.endswith("optim.lr=0.004")
    assert SweepRecord.load(plan.name).finished == 3


def test_pbt_exploit_copies_the_donors_weights(ray_cluster, tmp_path) -> None:
    ingest("digits")
    space = write(
        tmp_path,
        "pbt.yaml",
        "description: temperature by PBT\nscheduler: pbt\n"
        "pbt: {perturbation_interval: 1, quantile_fraction: 0.5, resample_probability: 0.5,"
        " synch: true}\n"
        "params:\n  method_args.temperature: {uniform: [0.05, 1.0]}\n",
    )
    # synchronous PBT ranks both trials at every epoch, so the worse one copies the better one
    job = write(tmp_path, "job.yaml", JOB)  # 3 epochs: within the 4 checkpoints a trial keeps
    plan = plan_sweep(SweepSettings(job_file=job, space_file=space, samples=2, max_concurrent=2))
    summary = run_sweep(plan)

    trial_ids = [outcome.trial_id for outcome in summary.outcomes]
    assert len(set(trial_ids)) == 2
    saved = defaultdict(set)  # (trial, epoch) -> digests of the weights it checkpointed
    restores = []
    for trial_id in trial_ids:
        trace = runs_root() / trial_run_name(plan.name, trial_id) / WEIGHTS_TRACE
        for line in trace.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "saved":
                saved[trial_id, event["epoch"]].add(event["weights"])
            else:
                restores.append((trial_id, event))
    newest = {}  # a trial's newest checkpoint is on disk: the trace shows its very weights
    for state in (sweeps_root() / plan.name).glob(f"*/checkpoint_*/{STATE_FILE}"):
        trial_id = trial_id_in(str(state.parent.parent))
        epoch = checkpoint_epoch(state.parent)
        if epoch >= newest.get(trial_id, (-1, ""))[0]:
            newest[trial_id] = (epoch, checkpoint_digest(state.parent))
    for trial_id, (epoch, digest) in newest.items():
        assert digest in saved[trial_id, epoch]
    exploits = 0
    for target, restore in restores:  # a trial resumes its own checkpoint, or a donor's
        sources = [
            trial
            for (trial, epoch), digests in saved.items()
            if epoch == restore["epoch"] and restore["weights"] in digests
        ]
        assert sources, (target, restore, saved)  # the weights of a checkpoint, exactly
        exploits += target not in sources
    assert exploits, f"PBT never exploited another trial's checkpoint: {restores}"

    client = MlflowClient(summary.record.tracking_uri)
    changed = 0
    for run in children(client, summary.record.parent_run_id):
        assert run.info.status == "FINISHED"
        key = f"{SCHEDULE_PREFIX}method_args.temperature"
        schedule = client.get_metric_history(run.info.run_id, key)  # an exploit skips epochs
        assert max(m.step for m in schedule) == plan.job.optim.epochs
        changed += len({m.value for m in schedule}) > 1
    assert changed, "no trial's logged schedule shows PBT's perturbation"


def end_leftovers(processes: list[psutil.Process], grace_s: float = 20.0) -> None:
    """Kill those of `processes` still alive after `grace_s` seconds."""
    deadline = time.monotonic() + grace_s
    alive = processes
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in alive if _alive(p)]
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def in_session(session_id: int) -> list[psutil.Process]:
    """Live processes of a session: Ray gives each actor its own process group, not session."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getsid(process.pid) == session_id:
                members.append(process)
    return members


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(tmp_path) -> None:
    ingest("digits")
    space = write(
        tmp_path,
        "tau.yaml",
        "description: temperatures\nparams:\n  method_args.temperature: {grid: [0.1, 0.3]}\n",
    )
    job = write(tmp_path, "job.yaml", JOB.replace("epochs: 3", "epochs: 2"))
    command = [sys.executable, "-m", "reprlab.cli", "tune", job, "--space", space]
    command += ["--search", "grid", "--scheduler", "fifo", "--max-concurrent", "1"]
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # own Ray
    driver = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    record = first = None
    while time.monotonic() < deadline and driver.poll() is None:
        time.sleep(2)
        records = list(sweeps_root().glob("*/reprlab_sweep.json"))
        if not records:
            continue
        record = SweepRecord.load(records[0].parent.name)
        client = MlflowClient(record.tracking_uri)
        runs = children(client, record.parent_run_id)
        done = [run for run in runs if run.info.status == "FINISHED"]
        if done and len(runs) == 2:  # the second trial has started: kill its driver
            first = done[0]
            break
    assert first is not None, f"the first trial never finished: {driver.stderr.read()[-2000:]}"
    started_by_driver = psutil.Process(driver.pid).children(recursive=True)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    # Ray 2.60's fate sharing takes its raylet and GCS down with a killed driver, but not two
    # of its helper processes (measured: the dashboard and runtime-env agents, or two python3
    # helpers in their own session), and an actor started after the snapshot above (a trial's
    # TrainController) may take longer than the suite's grace to notice: end them all
    end_leftovers(started_by_driver + in_session(driver.pid))

    resumed = subprocess.Popen(
        [sys.executable, "-m", "reprlab.cli", "tune", "--resume", record.name],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = resumed.communicate(timeout=600)
    finally:  # its trials' actors may still be exiting (or it hung): none may outlive the suite
        resumed.kill()
        end_leftovers(in_session(resumed.pid))
    assert resumed.returncode == 0, stderr[-3000:]
    assert "reproduce it: reprlab run" in stdout

    client = MlflowClient(record.tracking_uri)
    runs = children(client, record.parent_run_id)
    assert len(runs) == 2  # exactly one child run per trial, across both drivers
    assert {run.data.params["method_args.temperature"] for run in runs} == {"0.1", "0.3"}
    assert all(run.info.status == "FINISHED" for run in runs)
    finished_before = client.get_metric_history(first.info.run_id, "train/loss")
    assert len(finished_before) == 2  # its two epochs, logged once: the trial was not rerun
    assert client.get_run(record.parent_run_id).info.status == "FINISHED"
    assert SweepRecord.load(record.name).finished == 2
