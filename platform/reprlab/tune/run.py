"""Run a planned sweep end to end on the driver: the MLflow parent run, Ray with its output in
the sweep's log file, the live trial table, the Tuner (new or restored), and the record of
what it found."""

from __future__ import annotations

import os
from dataclasses import dataclass

import mlflow
import ray
from rich.console import Console
from rich.live import Live

from reprlab.config import flatten, to_yaml
from reprlab.data.handle import DatasetHandle
from reprlab.runs import LOG_FILE
from reprlab.tracking.mlflow import start_run, tracked, tracking_uri
from reprlab.train.prepare import open_dataset
from reprlab.train.run import dataset_input
from reprlab.train.session import RaySession
from reprlab.tune.display import SweepBoard
from reprlab.tune.results import (
    TrialOutcome,
    best_outcome,
    log_sweep_results,
    reproduce_command,
    trial_outcomes,
)
from reprlab.tune.sweep import (
    SweepPlan,
    SweepRecord,
    TrialCloser,
    build_tuner,
    close_interrupted,
    trial_budget,
)


class SweepInterrupted(RuntimeError):
    """The driver stopped (Ctrl-C) before every trial ended; the sweep can be resumed."""


@dataclass(frozen=True)
class SweepSummary:
    """A finished sweep: its record, every trial's outcome, the best one and how to rerun it."""

    record: SweepRecord
    outcomes: list[TrialOutcome]
    best: TrialOutcome | None
    command: str | None
    tags: dict[str, str]


def open_sweep(
    plan: SweepPlan, dataset: DatasetHandle, resumed: SweepRecord | None = None
) -> SweepRecord:
    """The sweep's MLflow parent run (reopened when resuming) with the sweep's settings, the
    space and the job as params and artifacts, and the trials' dataset as its input (recorded
    here, before trials that start together would each insert it); the record written into the
    sweep's folder."""
    job = plan.job
    uri = tracking_uri(job.tracking.tracking_uri)
    settings = plan.settings
    params = {
        "sweep.space": plan.space.name,
        "sweep.scheduler": plan.scheduler,
        "sweep.search": settings.search,
        "sweep.samples": plan.samples,
        "sweep.trials": plan.trials,
        "sweep.metric": plan.metric,
        "sweep.mode": plan.mode,
        **{f"space.{d.key}": d.describe() for d in plan.space.domains},
        **{f"job.{key}": value for key, value in flatten(job).items()},
    }
    run_id = start_run(
        job.tracking.experiment,
        plan.name,
        params=params,
        config_yaml=to_yaml(job),
        tags={"reprlab.job": job.name, "reprlab.sweep": plan.name, "reprlab.kind": "sweep"},
        uri=uri,
        run_id=resumed.parent_run_id if resumed else None,
        dataset=dataset_input(dataset),
    )
    if resumed is None:
        mlflow.MlflowClient(uri).log_text(
            run_id, plan.space.path.read_text(), f"sweep/{plan.space.path.name}"
        )
    record = resumed or SweepRecord(
        name=plan.name,
        settings=settings,
        job=job.name,
        space=plan.space.name,
        trials=plan.trials,
        parent_run_id=run_id,
        tracking_uri=uri,
    )
    record.save()
    return record


def run_sweep(
    plan: SweepPlan,
    *,
    console: Console | None = None,
    verbose: bool = False,
    resumed: SweepRecord | None = None,
) -> SweepSummary:
    """Run (or resume) the sweep; the parent run ends FINISHED, or FAILED when the driver is
    interrupted or fails (a later `--resume` reopens it). ConfigError, before Ray starts, when
    the job's dataset is not ingested or does not fit the job."""
    dataset = open_dataset(plan.job)  # missing or not fitting: fails before Ray starts
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own boxes and tables: off
    record = open_sweep(plan, dataset, resumed)
    board = SweepBoard(plan.space.keys, plan.metric, plan.mode, plan.job.optim.epochs)
    callbacks = [TrialCloser(plan.name), board]
    session = RaySession(plan.folder / LOG_FILE, verbose, worker_warnings=False)
    with tracked(record.parent_run_id, record.tracking_uri):
        with mlflow.start_run(run_id=record.parent_run_id), session:
            tuner = build_tuner(plan, record.parent_run_id, callbacks, resumed is not None)
            if console is not None:
                budget = ", ".join(f"{k} {v:g}" for k, v in trial_budget(plan).items() if v)
                console.print(
                    f"sweep {plan.name}: {plan.trials} trials, each holding {budget} "
                    f"(cluster: {ray.cluster_resources().get('CPU', 0):g} CPU)",
                    highlight=False,
                )
                with Live(get_renderable=board.table, console=console, refresh_per_second=2):
                    results = tuner.fit()
            else:
                results = tuner.fit()
            unfinished = board.unfinished()
            if unfinished or len(results) < plan.trials:  # Ctrl-C: Tune returns early
                close_interrupted(plan.name, unfinished)
                raise SweepInterrupted(
                    f"sweep {plan.name} interrupted with {len(results)} of {plan.trials} trials "
                    "started; "
                    f"continue it: reprlab tune --resume {plan.name}"
                )
            outcomes = trial_outcomes(plan, results)
            best = best_outcome(plan, outcomes)
            tags = log_sweep_results(plan, outcomes, best, plan.settings.register)
    record.finished = sum(o.state != "failed" for o in outcomes)
    if best is not None:
        record.best = {"values": best.values, "metric": best.metric, "trial": best.trial_id}
    record.save()
    command = reproduce_command(plan, best) if best is not None else None
    return SweepSummary(record, outcomes, best, command, tags)
