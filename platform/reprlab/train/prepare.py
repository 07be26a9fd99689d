"""The first phase of a run: load the job's dataset once, check the job against it, and fix the
run's name and folder, all before Ray starts, so a job that cannot run fails in one line."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from reprlab.config import ConfigError, JobConfig
from reprlab.data.episodes import EpisodeSpec, episodes_problem
from reprlab.data.handle import DatasetHandle
from reprlab.runs import RunRecord, run_checkpoints, run_to_resume, runs_root
from reprlab.train.build import StartingPoint
from reprlab.train.init_from import starting_point


@dataclass(frozen=True)
class PreparedRun:
    """A job checked against its verified dataset, with the run's name and folder; `resumed`
    is the record of the run being continued (None for a new run, or one that died early)."""

    job: JobConfig
    dataset: DatasetHandle
    run_name: str
    storage: Path
    resumed: RunRecord | None = None
    start: StartingPoint = StartingPoint()
    """The encoder and teacher earlier runs give it (`model.init_from`, `model.teacher`)."""

    @property
    def checkpoints(self) -> str:
        """The folder or URI Ray Train writes the run's checkpoints to."""
        return run_checkpoints(self.job, self.run_name)


def prepare(
    job: JobConfig, *, resume: str | None = None, run_name: str | None = None
) -> PreparedRun:
    """Open and verify the dataset (every shard hashed once), check the job against its
    manifest, read what it takes from earlier runs (`model.init_from`, `model.teacher`), and
    name the run: a new timestamped one, `resume`, or `run_name` (a Tune trial's fixed name,
    continued when its folder already holds a record). ConfigError otherwise."""
    if run_name is not None and (runs_root() / run_name).is_dir():
        resume = run_name
    resumed = run_to_resume(resume) if resume else None
    dataset = open_dataset(job)
    start = starting_point(job, dataset.in_chans, dataset.num_classes)
    run_name = resume or run_name or f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return PreparedRun(job, dataset, run_name, runs_root() / run_name, resumed, start)


def open_dataset(job: JobConfig) -> DatasetHandle:
    """The job's ingested dataset, verified and checked against the job; ConfigError (one
    line) when it is not ingested, broken, or does not fit."""
    try:
        dataset = DatasetHandle.open(job.data.dataset)
    except ValueError as error:
        raise ConfigError(f"data.dataset: {error}") from None
    check_job_fits_dataset(job, dataset)
    return dataset


def check_job_fits_dataset(job: JobConfig, dataset: DatasetHandle) -> None:
    """ConfigError (one line, naming the key) when a split, episode setting, evaluation, class
    count or labels per class of the job does not fit the dataset's manifest."""
    name = job.data.dataset
    fewshot = job.eval.fewshot
    splits = [("data.train_split", job.data.train_split), ("data.eval_split", job.data.eval_split)]
    if fewshot is not None:
        splits.append(("eval.fewshot.split", fewshot.split))
    if job.eval.retrieval_split is not None:
        splits.append(("eval.retrieval_split", job.eval.retrieval_split))
    for key, split in splits:
        if split not in dataset.splits:
            allowed = ", ".join(dataset.splits)
            raise ConfigError(f"{key}: '{split}' is not a split of {name}; allowed: {allowed}")
    for key, split, spec in _episode_settings(job):
        problem = episodes_problem(dataset.manifest, split, spec)
        if problem:
            raise ConfigError(f"{key}: {name} {problem}")
    if dataset.splits_classes:
        for key in ("linear_probe", "knn", "online_linear", "knn_every"):
            if getattr(job.eval, key):
                raise ConfigError(
                    f"eval.{key}: {name} splits its classes (train/val/test share none), so a "
                    "classifier of train classes cannot score held-out ones; must be off "
                    "(use eval.fewshot)"
                )
    per_class = dataset.manifest["splits"][job.data.train_split].get("per_class", {})
    if job.data.m_per_class is not None and per_class:
        wanted = job.data.batch_size // job.data.m_per_class
        if wanted > len(per_class):
            raise ConfigError(
                f"data.m_per_class: {name}'s {job.data.train_split} split has "
                f"{len(per_class)} classes, fewer than the data.batch_size / data.m_per_class = "
                f"{wanted} classes a batch holds; raise it or lower data.batch_size"
            )
    scored = job.eval.retrieval_split or job.data.eval_split
    counts = dataset.manifest["splits"][scored].get("per_class", {})
    if job.eval.retrieval and counts and max(counts.values()) < 2:
        raise ConfigError(
            f"eval.retrieval: no class of {name}'s {scored} split has two images, so no image "
            "has a match to retrieve; must be false (or set eval.retrieval_split)"
        )
    wanted = job.data.labels_per_class
    if wanted is not None and per_class and min(per_class.values()) < wanted:
        smallest, count = min(per_class.items(), key=lambda item: item[1])
        raise ConfigError(
            f"data.labels_per_class: class {smallest!r} of {name}'s {job.data.train_split} "
            f"split has {count} rows; must be <= {count}, got {wanted}"
        )
    classes = getattr(job.parsed_method_args(), "num_classes", None)
    if classes is not None and classes != dataset.num_classes:
        raise ConfigError(
            f"method_args.num_classes: {name} has {dataset.num_classes} classes; must be "
            f"{dataset.num_classes}, got {classes}"
        )


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
