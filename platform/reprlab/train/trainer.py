"""Run a job end to end from the driver: MLflow run, Ray Data pipeline, TorchTrainer, evaluation
of the final encoder, artifacts. The run ends FINISHED or FAILED, never RUNNING."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import ray
import ray.train
from ray.train.torch import TorchTrainer

from reprlab.config import ConfigError, JobConfig
from reprlab.data.augment import ViewPolicy
from reprlab.data.catalog import reprlab_home, resolve_dataset
from reprlab.data.episodes import EpisodeSpec, episodes_problem
from reprlab.data.pipeline import (
    bad_row_counter,
    build_policy,
    ingest_options,
    row_dataset,
    view_dataset,
)
from reprlab.data.shards import verify_dataset
from reprlab.eval.features import evaluate_encoder
from reprlab.tracking.figures import log_episodes, log_view_pairs
from reprlab.tracking.mlflow import log_encoder, start_run, tracked, tracking_uri
from reprlab.train.checkpoint import load_checkpoint
from reprlab.train.loop import make_training_module, train_loop_per_worker

RUN_RECORD = "reprlab_run.json"


@dataclass
class RunSummary:
    """What a finished run produced and where to find it."""

    run_name: str
    run_id: str
    tracking_uri: str
    storage: Path
    metrics: dict[str, float] = field(default_factory=dict)


def runs_root() -> Path:
    """Where Ray Train persists checkpoints: $REPRLAB_HOME/runs."""
    return reprlab_home() / "runs"


def ensure_ray() -> None:
    """Connect to RAY_ADDRESS when set, else start a local Ray on this machine's CPUs. Ray Train's
    print patch is off: it would echo every worker line twice."""
    if not ray.is_initialized():
        ray.init(
            address=os.environ.get("RAY_ADDRESS"),
            runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False  # one plan line per dataset per epoch otherwise


def _run_record(storage: Path) -> dict:
    path = storage / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def job_dataset(job: JobConfig) -> tuple[Path, dict]:
    """The job's ingested dataset and its verified manifest; ConfigError (one line, naming the
    key) when the dataset or a split the job names is not there. Runs before Ray starts."""
    try:
        dataset_dir = resolve_dataset(job.data.dataset)
        manifest = verify_dataset(dataset_dir)
    except ValueError as error:
        raise ConfigError(f"data.dataset: {error}") from None
    fewshot = job.eval.fewshot
    splits = [("data.train_split", job.data.train_split), ("data.eval_split", job.data.eval_split)]
    if fewshot is not None:
        splits.append(("eval.fewshot.split", fewshot.split))
    for key, split in splits:
        if split not in manifest["splits"]:
            allowed = ", ".join(manifest["splits"])
            raise ConfigError(
                f"{key}: '{split}' is not a split of {job.data.dataset}; allowed: {allowed}"
            )
    for key, split, spec in _episode_settings(job):
        problem = episodes_problem(manifest, split, spec)
        if problem:
            raise ConfigError(f"{key}: {job.data.dataset} {problem}")
    if "class_split" in manifest:
        for key in ("linear_probe", "knn", "online_linear", "knn_every"):
            if getattr(job.eval, key):
                raise ConfigError(
                    f"eval.{key}: {job.data.dataset} splits its classes (train/val/test share "
                    "none), so a classifier of train classes cannot score held-out ones; must be "
                    "off (use eval.fewshot)"
                )
    return dataset_dir, manifest


def _episode_settings(job: JobConfig) -> list[tuple[str, str, EpisodeSpec]]:
    """(config key, split, episode shape) of every episode set the job draws."""
    settings = []
    if (episodes := job.data.episodes) is not None:
        spec = EpisodeSpec(episodes.ways, episodes.shots, episodes.queries)
        settings.append(("data.episodes", job.data.train_split, spec))
    if (fewshot := job.eval.fewshot) is not None:
        splits = [fewshot.split] + ([job.data.eval_split] if fewshot.val_episodes else [])
        for split in splits:
            for shots in fewshot.shots:
                spec = EpisodeSpec(fewshot.ways, shots, fewshot.queries)
                settings.append(("eval.fewshot", split, spec))
    return settings


def build_trainer(
    job: JobConfig,
    dataset_dir: Path,
    manifest: dict,
    policy: ViewPolicy,
    run_name: str,
    run_context: dict,
) -> TorchTrainer:
    """The TorchTrainer for `job`: its view pipeline as the "train" dataset (plus the plain
    held-out rows as "eval" and train rows as "bank" for the online monitors), workers and CPU
    budget from `scaling`, checkpoints under runs_root()/run_name (where a restart resumes).
    Episodic jobs have no "train" dataset: workers read the split's shards from `dataset_dir`
    (a path every node sees, like the shards Ray Data reads)."""
    datasets = {}
    if job.data.episodes is None:  # episodes are drawn by the workers from the split in memory
        datasets["train"] = view_dataset(
            dataset_dir,
            job.data.train_split,
            policy,
            map_batch_size=job.data.map_batch_size,
            counter_name=run_context.get("counter_name"),
            cache=job.data.cache,
        )
    if job.eval.online_linear or job.eval.knn_every:
        datasets["eval"] = row_dataset(dataset_dir, job.data.eval_split)
    if job.eval.knn_every:
        datasets["bank"] = row_dataset(dataset_dir, job.data.train_split)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "job": job.model_dump(mode="json"),
            "dataset_dir": str(dataset_dir),
            "in_chans": manifest["image_shape"][2],
            "image_shape": manifest["image_shape"],
            "num_classes": len(manifest["classes"]),
            "train_rows": manifest["splits"][job.data.train_split]["count"],
            "datasets": sorted(datasets),
            **run_context,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=job.scaling.num_workers,
            use_gpu=job.scaling.use_gpu,
            resources_per_worker=None
            if job.scaling.use_gpu
            else {"CPU": job.scaling.cpus_per_worker},
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(execution_options=ingest_options(job.data.data_cpus)),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(runs_root()),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )


def resumable_run(name: str) -> Path:
    """The storage folder of an earlier run to resume; ConfigError naming the runs there when
    there is none by that name. Runs before Ray starts."""
    storage = runs_root() / name
    if not storage.is_dir():
        known = sorted(p.name for p in runs_root().glob("*") if p.is_dir()) or ["none yet"]
        raise ConfigError(
            f"--resume: no run named '{name}' in {runs_root()}; runs: {', '.join(known)}"
        )
    return storage


def run_job(job: JobConfig, *, resume: str | None = None) -> RunSummary:
    """Train and evaluate `job`. With `resume=RUN_NAME`, continue that run from its latest
    checkpoint in the same MLflow run."""
    dataset_dir, manifest = job_dataset(job)
    run_name = resume or f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = resumable_run(resume) if resume else runs_root() / run_name
    uri = tracking_uri(job.tracking.tracking_uri)
    run_id = start_run(job, run_name, run_id=_run_record(storage).get("mlflow_run_id"))
    storage.mkdir(parents=True, exist_ok=True)
    record = {
        "mlflow_run_id": run_id,
        "tracking_uri": uri,
        "job": job.model_dump(mode="json"),
        "in_chans": manifest["image_shape"][2],
        "num_classes": len(manifest["classes"]),
    }
    (storage / RUN_RECORD).write_text(json.dumps(record))

    with tracked(run_id, uri), mlflow.start_run(run_id=run_id):
        policy = build_policy(job.data.augment.model_dump(), job.data.image_size)
        episodes = job.data.episodes
        if episodes is not None:
            spec = EpisodeSpec(episodes.ways, episodes.shots, episodes.queries)
            log_episodes(dataset_dir, job.data.train_split, spec, episodes.rotate_classes, job.seed)
        elif job.tracking.augment_grid_pairs:
            log_view_pairs(
                dataset_dir, job.data.train_split, policy, job.tracking.augment_grid_pairs
            )
        ensure_ray()
        counter_name = f"reprlab-bad-rows-{run_id}"
        counter = bad_row_counter(counter_name)
        trainer = build_trainer(
            job,
            dataset_dir,
            manifest,
            policy,
            run_name,
            {
                "run_id": run_id,
                "tracking_uri": uri,
                "counter_name": counter_name,
            },
        )
        try:
            result = trainer.fit()
        finally:
            ray.kill(counter)
        module = make_training_module(job, manifest["image_shape"][2], len(manifest["classes"]))
        with result.checkpoint.as_directory() as directory:
            load_checkpoint(Path(directory), module)
        method = module.method
        metrics = {
            key: value
            for key, value in (result.metrics or {}).items()
            if key.startswith("fewshot/test")
        }
        if job.eval.linear_probe or job.eval.knn:
            encoder_metrics = evaluate_encoder(method, dataset_dir, job)
            mlflow.log_metrics(encoder_metrics)
            metrics |= encoder_metrics
        if job.tracking.log_model:
            log_encoder(method.backbone, manifest["image_shape"], job.data.image_size)
    return RunSummary(run_name, run_id, uri, storage, metrics)
