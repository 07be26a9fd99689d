"""What a sweep found: one row per trial (values, epochs, metric, state, child run), the best
trial, and how the parent MLflow run records them (best values and metric, a results table,
the metric against each searched key, every learning curve, the best encoder)."""

from __future__ import annotations

import csv
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from reprlab.data.handle import DatasetHandle
from reprlab.tracking.figures import learning_curves_figure, metric_against_values_figure
from reprlab.tracking.mlflow import log_encoder
from reprlab.train.build import load_trained_method
from reprlab.tune.display import short_value
from reprlab.tune.sweep import SweepPlan, trial_record

BEST_ALIAS = "best"


@dataclass(frozen=True)
class TrialOutcome:
    """One trial as the sweep ended it."""

    trial_id: str
    values: dict[str, Any]
    epochs: int
    metric: float | None
    state: str
    curve: tuple[list[float], list[float]]
    run_id: str | None


def trial_outcomes(plan: SweepPlan, results: Any) -> list[TrialOutcome]:
    """One outcome per trial of a Tune ResultGrid (errored trials included)."""
    outcomes = []
    for result in results:
        metrics = result.metrics or {}
        history = result.metrics_dataframe
        curve: tuple[list[float], list[float]] = ([], [])
        if history is not None and plan.metric in history and "epoch" in history:
            rows = history[["epoch", plan.metric]].dropna()
            curve = (rows["epoch"].tolist(), rows[plan.metric].tolist())
        trial_id = trial_id_in(result.path)  # not metrics' trial_id: a PBT exploit copies it
        epochs = int(metrics.get("epoch", 0))
        if result.error is not None:
            state = "failed"
        else:
            state = "finished" if epochs >= plan.job.optim.epochs else "stopped early"
        record = trial_record(plan.name, trial_id)
        outcomes.append(
            TrialOutcome(
                trial_id=trial_id,
                values={key: result.config.get(key) for key in plan.space.keys},
                epochs=epochs,
                metric=metrics.get(plan.metric),
                state=state,
                curve=curve,
                run_id=record.mlflow_run_id if record else None,
            )
        )
    return sorted(outcomes, key=lambda outcome: outcome.trial_id)


def trial_id_in(path: str) -> str:
    """The trial id in a Tune trial folder's name (run_trial_<id>_<index>_<values>_<date>):
    <experiment>_<5 digits> from Tune's variant generator, 8 hex digits from a search
    algorithm (Optuna)."""
    found = re.search(r"_([0-9a-f]{5}_\d{5}|[0-9a-f]{8})_\d+_", Path(path).name)
    return found.group(1) if found else Path(path).name


def best_outcome(plan: SweepPlan, outcomes: list[TrialOutcome]) -> TrialOutcome | None:
    """The best metric among the trials that trained every epoch (ASHA's survivors), or among
    all scored trials when none did."""
    scored = [o for o in outcomes if o.metric is not None and o.state != "failed"]
    complete = [o for o in scored if o.state == "finished"] or scored
    if not complete:
        return None
    sign = 1 if plan.mode == "max" else -1
    return max(complete, key=lambda outcome: sign * outcome.metric)


def reproduce_command(plan: SweepPlan, best: TrialOutcome) -> str:
    """The `reprlab run` command that trains the best trial's configuration on its own."""
    assignments = [*plan.settings.overrides]
    assignments += [f"{key}={value}" for key, value in best.values.items()]
    return shlex.join(["reprlab", "run", plan.settings.job_file, *assignments])


def results_csv(plan: SweepPlan, outcomes: list[TrialOutcome]) -> str:
    """The results table: trial, values, epochs, metric, state, child run id."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["trial", *plan.space.keys, "epochs", plan.metric, "state", "run_id"])
    for outcome in outcomes:
        writer.writerow(
            [
                outcome.trial_id,
                *(outcome.values[key] for key in plan.space.keys),
                outcome.epochs,
                "" if outcome.metric is None else outcome.metric,
                outcome.state,
                outcome.run_id or "",
            ]
        )
    return text.getvalue()


def log_sweep_results(
    plan: SweepPlan, outcomes: list[TrialOutcome], best: TrialOutcome | None, register: str | None
) -> dict[str, str]:
    """Into the active (parent) MLflow run: results table, plots, best values and metric, and
    the best trial's encoder (registered as `register`@best when given). Returns the tags set."""
    mlflow.log_text(results_csv(plan, outcomes), "sweep/results.csv")
    scored = [o for o in outcomes if o.metric is not None and o.state != "failed"]
    if scored:
        numeric = _numeric_keys(plan, scored)
        values = {key: [float(o.values[key]) for o in scored] for key in numeric}
        if values:
            log_keys = {d.key for d in plan.space.domains if d.kind == "loguniform"}
            figure = metric_against_values_figure(
                values, [o.metric for o in scored], plan.metric, log_keys
            )
            mlflow.log_figure(figure, "sweep/metric_against_values.png")
        curves = {
            " ".join(f"{k.rsplit('.', 1)[-1]}={short_value(v)}" for k, v in o.values.items()): (
                o.curve
            )
            for o in outcomes
            if o.curve[0]
        }
        if curves:
            mlflow.log_figure(learning_curves_figure(curves, plan.metric), "sweep/curves.png")
    if best is None:
        return {}
    mlflow.log_params({f"best.{key}": value for key, value in best.values.items()})
    mlflow.log_metric(f"best/{plan.metric}", best.metric)
    tags = {"reprlab.best_trial": best.trial_id, "reprlab.best_run_id": best.run_id or ""}
    mlflow.set_tags(tags)
    record = trial_record(plan.name, best.trial_id)
    if plan.job.tracking.log_model and record is not None:
        method = load_trained_method(record, record.latest_checkpoint())
        shape = DatasetHandle.open(record.job.data.dataset).image_shape
        info = log_encoder(method.backbone, shape, plan.job.data.image_size)
        if register:
            version = mlflow.register_model(info.model_uri, register)
            MlflowClient().set_registered_model_alias(register, BEST_ALIAS, version.version)
            tags["registered"] = f"{register}@{BEST_ALIAS} (version {version.version})"
    return tags


def _numeric_keys(plan: SweepPlan, scored: list[TrialOutcome]) -> list[str]:
    """The searched keys whose every value is a number (those a plot can have on an axis)."""
    return [
        key
        for key in plan.space.keys
        if all(
            isinstance(o.values[key], int | float) and not isinstance(o.values[key], bool)
            for o in scored
        )
    ]
