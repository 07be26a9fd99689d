"""One sweep trial, run inside a Tune trial actor: a whole platform run (prepare, record, fit,
evaluate) of the sweep's job with the trial's values, recorded as a child of the sweep's MLflow
run. Distributed trials fit a TorchTrainer whose epochs reach Tune through
TuneReportCallback; single-process trials (PBT) run the same worker loop in-process and report
to Tune themselves, with the checkpoints PBT exploits."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import ray.tune
import torch
from mlflow.tracking import MlflowClient
from ray.tune.integration.ray_train import TuneReportCallback

from reprlab.config import JobConfig
from reprlab.home import HOME_VARIABLE
from reprlab.methods import Method
from reprlab.runs import RunRecord
from reprlab.storage import checkpoint_epoch
from reprlab.tracking.mlflow import RankZeroLogger
from reprlab.train.build import load_trained_method
from reprlab.train.checkpoint import checkpoint_digest, weights_digest
from reprlab.train.prepare import PreparedRun, prepare
from reprlab.train.run import evaluate, open_record, trained_method
from reprlab.train.session import quiet_ray_data
from reprlab.train.trainer import fit
from reprlab.train.worker_session import TrainSession
from reprlab.tune.spaces import trial_job

WEIGHTS_TRACE = "weights_trace.jsonl"
"""In a single-process trial's run folder: one line per checkpoint it saved or restored
(event, epoch, weights digest), the lineage of PBT's exploits (Tune may reuse a checkpoint
folder after an exploit, so the folders alone do not keep it)."""
LAST_CHECKPOINT = "checkpoint_last"
"""A single-process trial's newest checkpoint in its run folder (named as RunRecord looks)."""
STOPPED_TAG = "stopped_early"
"""Tag of a trial run the scheduler stopped before its last epoch."""
SCHEDULE_PREFIX = "schedule/"
"""Metric prefix of a single-process trial's current values, logged every epoch: the schedule
PBT made it follow."""


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of a sweep shares: the sweep's job (values not yet applied, its
    tracking URI resolved on the driver), its name, its parent MLflow run, whether trials run
    in one process (PBT), and the driver's $REPRLAB_HOME (datasets and run folders)."""

    job: JobConfig
    sweep_name: str
    parent_run_id: str
    single_process: bool
    home: Path


def trial_run_name(sweep_name: str, trial_id: str) -> str:
    """The run name (and run folder) of a sweep's trial; fixed, so a restarted trial continues
    its own run and MLflow keeps one child run per trial."""
    return f"{sweep_name}-{trial_id}"


class TuneSession(TrainSession):
    """A single-process trial runs the loop itself (rank 0, the job's device, no DDP) and its
    epochs go straight to Tune, each with its checkpoint (kept in
    the trial's folder, where PBT finds a donor's; the newest also in the run folder, where
    evaluation finds it); it starts from the checkpoint Tune hands it, the donor's after an
    exploit, and records each restore in the run folder."""

    def __init__(self, storage: Path, use_gpu: bool, logger: RankZeroLogger) -> None:
        self.storage = storage
        self.use_gpu = use_gpu
        self.logger = logger

    def rank(self) -> int:
        return 0

    def nodes(self) -> int:
        return 1

    def device(self) -> torch.device:
        return torch.device("cuda" if self.use_gpu else "cpu")

    def prepare_model(self, module: torch.nn.Module, ddp: bool) -> torch.nn.Module:
        return module.to(self.device())

    def checkpoint(self) -> ray.tune.Checkpoint | None:
        return ray.tune.get_checkpoint()

    def report(self, metrics: dict[str, float], checkpoint: ray.tune.Checkpoint | None) -> None:
        self.logger.log(metrics, step=int(metrics["epoch"]))  # first: PBT may stop us in report
        if checkpoint is not None:
            shutil.copytree(checkpoint.path, self.storage / LAST_CHECKPOINT, dirs_exist_ok=True)
            epoch = checkpoint_epoch(Path(checkpoint.path))
            self._trace("saved", epoch, checkpoint_digest(Path(checkpoint.path)))
        ray.tune.report(metrics, checkpoint=checkpoint)

    def restored(self, module: torch.nn.Module, epoch: int) -> None:
        self._trace("restored", epoch, weights_digest(module.state_dict()))

    def _trace(self, event: str, epoch: int, weights: str) -> None:
        line = {"event": event, "epoch": epoch, "weights": weights}
        with (self.storage / WEIGHTS_TRACE).open("a") as trace:
            trace.write(json.dumps(line) + "\n")

    def first_epoch(self, checkpoints: str) -> int:
        checkpoint = ray.tune.get_checkpoint()
        if checkpoint is None:
            return 0
        with checkpoint.as_directory() as directory:
            return checkpoint_epoch(Path(directory))


def run_trial(config: dict[str, Any], plan: TrialPlan) -> None:
    """The Tune trainable of every sweep: the job with `config`'s values applied (dotted keys),
    trained, evaluated and recorded (FINISHED); a stopped or failed trial's run is ended by the
    driver."""
    quiet_ray_data()
    os.environ[HOME_VARIABLE] = str(plan.home)  # a trial actor serves this one trial
    prepared, record = _open_trial(config, plan)
    # Not `tracked`: a trial the scheduler stops is interrupted here as if it failed, so the
    # driver (TrialCloser), which knows stopped from failed, ends a run that does not finish.
    mlflow.start_run(run_id=record.mlflow_run_id)
    if plan.single_process:
        method = _fit_in_process(prepared, record, config)
    else:
        result = fit(
            prepared,
            tracking_uri=record.tracking_uri,
            run_id=record.mlflow_run_id,
            callbacks=[TuneReportCallback()],
        )
        method = trained_method(record, result)
    mlflow.log_metrics(evaluate(prepared, method))
    mlflow.end_run()


def _open_trial(config: dict[str, Any], plan: TrialPlan) -> tuple[PreparedRun, RunRecord]:
    trial_id = ray.tune.get_context().get_trial_id()
    job = trial_job(plan.job, config)
    if plan.single_process:
        job = job.model_copy(update={"scaling": job.scaling.model_copy(update={"num_workers": 0})})
    prepared = prepare(job, run_name=trial_run_name(plan.sweep_name, trial_id))
    tags = {
        "mlflow.parentRunId": plan.parent_run_id,
        "reprlab.sweep": plan.sweep_name,
        "reprlab.trial_id": trial_id,
    }
    record = open_record(prepared, tags)
    if prepared.resumed is not None:  # an interrupted trial the driver closed as stopped
        client = MlflowClient(record.tracking_uri)
        if STOPPED_TAG in client.get_run(record.mlflow_run_id).data.tags:
            client.delete_tag(record.mlflow_run_id, STOPPED_TAG)
    return prepared, record


def _fit_in_process(prepared: PreparedRun, record: RunRecord, config: dict[str, Any]) -> Method:
    """Fit with the loop in this process (Ray Train's local mode), epochs reported to Tune;
    the method with the weights of the last checkpoint Tune kept."""
    schedule = {
        f"{SCHEDULE_PREFIX}{key}": float(value)
        for key, value in config.items()
        if isinstance(value, int | float)
    }
    logger = RankZeroLogger(record.mlflow_run_id, record.tracking_uri, rank=0)
    fit(
        prepared,
        tracking_uri=record.tracking_uri,
        session=TuneSession(record.storage, prepared.job.scaling.use_gpu, logger),
        epoch_constants=schedule,
    )
    return load_trained_method(record, record.storage / LAST_CHECKPOINT)
