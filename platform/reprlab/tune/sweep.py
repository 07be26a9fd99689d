"""A sweep: a job, a search space and a scheduler, planned and checked before Ray starts, run by
a Ray Tune Tuner (one whole platform run per trial, tune/trial.py), recorded as one MLflow
parent run with a child per trial, and resumable by name after an interrupted driver."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
import ray.tune
from mlflow.tracking import MlflowClient
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from reprlab.config import ConfigError, JobConfig, load_job
from reprlab.home import reprlab_home
from reprlab.methods import method_class
from reprlab.runs import RunRecord, runs_root
from reprlab.tracking.mlflow import end_run, tracking_uri
from reprlab.tune.spaces import SearchSpace, load_space
from reprlab.tune.trial import STOPPED_TAG, TrialPlan, run_trial, trial_run_name

SCHEDULERS = ("fifo", "asha", "pbt")
SEARCHES = ("random", "grid", "optuna")
DATA_TASK_CPUS = 1.0
"""Each Ray Data task asks for a whole CPU: a trial's pipeline needs one free, whatever
data.data_cpus caps it at (two trials that left it half a CPU each hung here)."""
DEFAULT_SAMPLES = 8
"""Trials of a random or Optuna search when --samples is not given (a grid runs once)."""
SWEEP_RECORD = "reprlab_sweep.json"
TRIAL_DRIVER_MEMORY = 256 * 2**20
"""Bytes reserved for a distributed trial's driver actor (it only starts a TorchTrainer)."""
ASHA_REDUCTION = 4
"""ASHA keeps the top quarter of the trials at each rung (rungs at grace x 4^k epochs); with
3, as many trials as the first rungs' noise lets through run to the end (measured: 52 % of a
12-point grid's epochs against 40 % wanted, benchmarks/tune_efficiency.py)."""


def sweeps_root() -> Path:
    """Where Tune keeps each sweep's state and trial folders: $REPRLAB_HOME/sweeps."""
    return reprlab_home() / "sweeps"


@dataclass(frozen=True)
class SweepSettings:
    """What the user asked for: job file and overrides, space file, and how to search."""

    job_file: str
    space_file: str
    overrides: tuple[str, ...] = ()
    scheduler: str | None = None
    search: str = "random"
    samples: int | None = None
    max_concurrent: int | None = None
    metric: str | None = None
    mode: str | None = None
    register: str | None = None


@dataclass(frozen=True)
class SweepPlan:
    """A sweep checked against its job, before Ray: the resolved scheduler, metric and mode,
    the trial count, its name and folder."""

    name: str
    job: JobConfig
    space: SearchSpace
    settings: SweepSettings
    scheduler: str
    metric: str
    mode: str
    samples: int
    trials: int

    @property
    def folder(self) -> Path:
        return sweeps_root() / self.name

    @property
    def single_process(self) -> bool:
        """PBT exploits Tune checkpoints, which only a single-process trial reports."""
        return self.scheduler == "pbt"


@dataclass
class SweepRecord:
    """A sweep's folder record: its settings, MLflow parent run and progress, for `--resume`
    and `reprlab sweeps`."""

    name: str
    settings: SweepSettings
    job: str
    space: str
    trials: int
    parent_run_id: str
    tracking_uri: str
    created: float = field(default_factory=time.time)
    finished: int = 0
    best: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        folder = sweeps_root() / self.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SWEEP_RECORD).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, name: str) -> SweepRecord:
        """The record of sweep `name`; ConfigError naming the sweeps there when there is none."""
        path = sweeps_root() / name / SWEEP_RECORD
        if not path.is_file():
            known = sorted(p.parent.name for p in sweeps_root().glob(f"*/{SWEEP_RECORD}"))
            raise ConfigError(
                f"--resume: no sweep named '{name}' in {sweeps_root()}; sweeps: "
                f"{', '.join(known) or 'none yet'}"
            )
        payload = json.loads(path.read_text())
        settings = payload.pop("settings")
        settings["overrides"] = tuple(settings["overrides"])
        return cls(settings=SweepSettings(**settings), **payload)


def list_sweeps() -> list[SweepRecord]:
    """Every sweep under sweeps_root(), newest first."""
    records = [
        SweepRecord.load(path.parent.name) for path in sweeps_root().glob(f"*/{SWEEP_RECORD}")
    ]
    return sorted(records, key=lambda record: record.created, reverse=True)


def default_metric(job: JobConfig) -> str:
    """The job's per-epoch evaluation: the held-out accuracy of a method that classifies, the
    online linear accuracy, or the validation few-shot accuracy of the first shot setting;
    ConfigError when the job evaluates nothing per epoch."""
    if method_class(job.method).classifies:
        return "classifier_acc"
    if job.eval.online_linear:
        return "online_linear_acc"
    fewshot = job.eval.fewshot
    if fewshot is not None and fewshot.val_episodes:
        return f"fewshot/val_{fewshot.ways}way_{fewshot.shots[0]}shot_acc"
    raise ConfigError(
        "--metric: the job evaluates nothing each epoch; turn on eval.online_linear or "
        "eval.fewshot.val_episodes, or name a train/ metric"
    )


def _check_metric(metric: str, job: JobConfig) -> None:
    reported = {"online_linear_acc"} if job.eval.online_linear else set()
    if method_class(job.method).classifies:
        reported.add("classifier_acc")
    if job.eval.knn_every:
        reported.add("knn_acc")
    fewshot = job.eval.fewshot
    if fewshot is not None and fewshot.val_episodes:
        reported |= {f"fewshot/val_{fewshot.ways}way_{k}shot_acc" for k in fewshot.shots}
    if metric not in reported and not metric.startswith("train/"):
        allowed = ", ".join(sorted(reported | {"train/loss"}))
        raise ConfigError(f"--metric: the job does not report {metric!r} each epoch; {allowed}")


def plan_sweep(settings: SweepSettings, name: str | None = None) -> SweepPlan:
    """Load and check job and space together, resolve scheduler, metric and mode, count the
    trials; every problem is a one-line ConfigError, raised before Ray starts."""
    job = load_job(settings.job_file, list(settings.overrides))
    if method_class(job.method).fits_in_closed_form:
        raise ConfigError(
            f"{settings.job_file}: method: {job.method!r} is fitted in closed form, with no "
            "epochs for a scheduler to compare; sweep a trained method"
        )
    space = load_space(settings.space_file, job)
    scheduler = settings.scheduler or space.scheduler or "asha"
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler: allowed: {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if settings.search not in SEARCHES:
        raise ConfigError(f"--search: allowed: {', '.join(SEARCHES)}, got {settings.search!r}")
    if scheduler == "pbt":
        if job.scaling.max_workers > 1:
            raise ConfigError(
                f"{settings.job_file}: scaling.num_workers: --scheduler pbt runs each trial in "
                "one process (PBT exploits the checkpoints only such a trial reports to Tune); "
                f"must be 0 or 1, got {job.scaling.num_workers}"
            )
        if settings.search != "random":
            raise ConfigError(
                f"--search: --scheduler pbt samples and perturbs its own population; allowed: "
                f"random, got {settings.search!r}"
            )
    samples = settings.samples or (1 if settings.search == "grid" else DEFAULT_SAMPLES)
    if samples < 1:
        raise ConfigError(f"--samples: must be >= 1, got {samples}")
    metric = settings.metric or space.metric or default_metric(job)
    _check_metric(metric, job)
    mode = settings.mode or space.mode or ("min" if "loss" in metric else "max")
    if mode not in ("max", "min"):
        raise ConfigError(f"--mode: allowed: max, min, got {mode!r}")
    space.param_space(settings.search)  # refuses a space the search cannot sample
    trials = space.trial_count(samples, settings.search)
    name = name or f"{job.name}-{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return SweepPlan(name, job, space, settings, scheduler, metric, mode, samples, trials)


def trial_budget(plan: SweepPlan) -> dict[str, float]:
    """Resources one trial holds at once: its Train workers (or its own process) and the CPUs
    its Ray Data pipeline may use beside them."""
    scaling = plan.job.scaling
    workers = 1 if plan.single_process else max(1, scaling.max_workers)
    data_cpus = max(plan.job.data.data_cpus, DATA_TASK_CPUS)
    cpus = (0 if scaling.use_gpu else workers * scaling.cpus_per_worker) + data_cpus
    return {"CPU": cpus, "GPU": workers if scaling.use_gpu else 0}


def concurrent_trials(plan: SweepPlan, cluster: dict[str, float]) -> int:
    """How many trials fit on `cluster` (ray.cluster_resources()) side by side, at least one:
    more would starve each other's Train workers or Ray Data tasks."""
    if plan.settings.max_concurrent:
        return plan.settings.max_concurrent
    budget = trial_budget(plan)
    fits = [math.floor(cluster.get(kind, 0) / need + 1e-9) for kind, need in budget.items() if need]
    return max(1, min(fits, default=1))


def scheduler_of(plan: SweepPlan) -> Any:
    """The Tune scheduler: FIFO; ASHA with rungs in epochs (trials that reach the last epoch
    finish their evaluation); or PBT perturbing the space every `pbt.perturbation_interval`
    epochs."""
    epochs = plan.job.optim.epochs
    if plan.scheduler == "asha":
        return ASHAScheduler(
            time_attr="epoch",
            max_t=epochs,
            grace_period=max(1, epochs // 8),
            reduction_factor=ASHA_REDUCTION,
            stop_last_trials=False,
        )
    if plan.scheduler == "pbt":
        pbt = plan.space.pbt
        return PopulationBasedTraining(
            time_attr="epoch",
            perturbation_interval=pbt.perturbation_interval,
            hyperparam_mutations=plan.space.mutations(),
            quantile_fraction=pbt.quantile_fraction,
            resample_probability=pbt.resample_probability,
            synch=pbt.synch,
            custom_explore_fn=plan.space.clamp,
        )
    return FIFOScheduler()


def search_of(plan: SweepPlan, concurrent: int) -> Any:
    """The search algorithm, seeded by the job's seed: Tune's variant generator (random and
    grid; it takes the concurrency limit itself) or Optuna's TPE."""
    if plan.settings.search == "optuna":
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a console line per study
        return OptunaSearch(seed=plan.job.seed)
    return BasicVariantGenerator(random_state=plan.job.seed, max_concurrent=concurrent)


def trainable_of(plan: SweepPlan, parent_run_id: str) -> Any:
    """The Tune trainable with its shared plan and its resources: no CPU for the trial actor of
    a distributed trial (its Train workers hold the CPUs; Tune refuses an empty request, so it
    asks for a little memory), one worker's for a single-process one."""
    job = plan.job
    uri = tracking_uri(job.tracking.tracking_uri)
    job = job.model_copy(update={"tracking": job.tracking.model_copy(update={"tracking_uri": uri})})
    trial_plan = TrialPlan(job, plan.name, parent_run_id, plan.single_process, reprlab_home())
    trainable = ray.tune.with_parameters(run_trial, plan=trial_plan)
    scaling = plan.job.scaling
    if not plan.single_process:
        return ray.tune.with_resources(trainable, {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY})
    if scaling.use_gpu:
        return ray.tune.with_resources(trainable, {"cpu": 0, "gpu": 1})
    return ray.tune.with_resources(trainable, {"cpu": scaling.cpus_per_worker})


def build_tuner(
    plan: SweepPlan, parent_run_id: str, callbacks: list[ray.tune.Callback], resume: bool
) -> ray.tune.Tuner:
    """A new Tuner for the plan, or the interrupted one restored from the sweep's folder
    (finished trials are not rerun; unfinished ones restart and continue their runs)."""
    trainable = trainable_of(plan, parent_run_id)
    if resume:
        tuner = ray.tune.Tuner.restore(
            str(plan.folder), trainable, resume_unfinished=True, resume_errored=True
        )
        # Tuner.restore keeps the callbacks pickled with the first driver; this one's display
        # and MLflow closer must receive the events (Ray 2.60 offers no argument for it).
        tuner._local_tuner._run_config.callbacks = callbacks
        return tuner
    concurrent = concurrent_trials(plan, ray.cluster_resources())
    return ray.tune.Tuner(
        trainable,
        param_space=plan.space.param_space(plan.settings.search),
        tune_config=ray.tune.TuneConfig(
            metric=plan.metric,
            mode=plan.mode,
            num_samples=plan.samples,
            scheduler=scheduler_of(plan),
            search_alg=search_of(plan, concurrent),
            # a Searcher (Optuna) is limited here; the variant generator limits itself
            max_concurrent_trials=concurrent if plan.settings.search == "optuna" else None,
        ),
        run_config=ray.tune.RunConfig(
            name=plan.name,
            storage_path=str(sweeps_root()),
            callbacks=callbacks,
            verbose=0,
            checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=4),
            failure_config=ray.tune.FailureConfig(max_failures=0),
        ),
    )


class TrialCloser(ray.tune.Callback):
    """On the driver: ends each finished trial's MLflow child run that its trial could not end
    itself. A trial the scheduler stopped is killed mid-training (its own run then reads
    RUNNING, or FAILED from the stop): FINISHED with `stopped_early`. An errored one: FAILED."""

    def __init__(self, sweep_name: str) -> None:
        self.sweep_name = sweep_name

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = trial_record(self.sweep_name, trial.trial_id)
        if record is None:
            return
        client = MlflowClient(record.tracking_uri)
        if client.get_run(record.mlflow_run_id).info.status != "FINISHED":
            client.set_tag(record.mlflow_run_id, STOPPED_TAG, "true")
            end_run(record.mlflow_run_id, record.tracking_uri, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = trial_record(self.sweep_name, trial.trial_id)
        if record is not None:
            end_run(record.mlflow_run_id, record.tracking_uri, failed=True)


def close_interrupted(sweep_name: str, trial_ids: list[str]) -> None:
    """End the MLflow runs of trials an interrupted driver left running as KILLED (a resumed
    sweep reopens them)."""
    for trial_id in trial_ids:
        record = trial_record(sweep_name, trial_id)
        if record is not None:
            client = MlflowClient(record.tracking_uri)
            if client.get_run(record.mlflow_run_id).info.status == "RUNNING":
                client.set_terminated(record.mlflow_run_id, status="KILLED")


def trial_record(sweep_name: str, trial_id: str) -> RunRecord | None:
    """The run record of a sweep's trial, or None when the trial died before writing one."""
    try:
        return RunRecord.load(runs_root() / trial_run_name(sweep_name, trial_id))
    except ValueError:
        return None
