"""MLflow tracking: where runs go, what a run records, and how it always ends.

The driver opens the run and records config, provenance, evaluation and artifacts; inside
Ray Train only world rank 0 writes metrics to that run (by id, through MlflowClient)."""

from __future__ import annotations

import contextlib
import json
import os
import platform as host
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import mlflow.pytorch
import torch
from mlflow import entities
from mlflow.entities import Metric, Param, SourceType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_GIT_DIRTY,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
)

from reprlab.home import reprlab_home

_VERSIONED = ("reprlab", "ray", "torch", "torchvision", "mlflow", "timm", "kornia", "numpy")


def tracking_uri(configured: str | None = None) -> str:
    """The job's URI if set, else MLFLOW_TRACKING_URI, else a SQLite file at an absolute path
    under $REPRLAB_HOME (so every process of a local run shares one store)."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = reprlab_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(home / 'mlflow.db').resolve()}"


def git_tags(cwd: Path | None = None) -> dict[str, str]:
    """MLflow's source tags for the working tree's commit and whether it has local changes
    (`mlflow.source.git.commit`, `mlflow.source.git.dirty`); none outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {MLFLOW_GIT_COMMIT: commit, MLFLOW_GIT_DIRTY: str(bool(dirty)).lower()}


def source_tags() -> dict[str, str]:
    """The run's source as MLflow records a local script's (entry point, type LOCAL, git
    commit), plus the whole command line, which MLflow does not keep."""
    entry = sys.argv[0] if sys.argv and sys.argv[0] else "<console>"
    return {
        MLFLOW_SOURCE_NAME: entry,
        MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL),
        "reprlab.command": shlex.join(sys.argv),
        **git_tags(),
    }


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers, plus Python's."""
    versions = {"python": host.python_version()}
    for package in _VERSIONED:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "absent"
    return versions


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""The kind MLflow records for an experiment of model training, not GenAI. MLflow 3.17's own
UI still opens any experiment on its GenAI overview unless the address asks for
`workflowType=machine_learning`, as `tracking.ui.runs_view_url` does."""


@dataclass(frozen=True)
class DatasetInput:
    """The data a run trains on, as MLflow's runs table shows it: the dataset's name, where it
    lives (a folder or URI), a digest of its content, and its rows per split."""

    name: str
    source: str
    digest: str
    split_sizes: dict[str, int]


def ensure_experiment(name: str, uri: str) -> str:
    """The experiment's id, created on first use and tagged as model development (an existing
    one without a kind gets the tag too). With a local SQLite store its artifacts go to
    $REPRLAB_HOME/artifacts (MLflow's default, ./mlruns, would follow the working directory);
    an MLflow server chooses its own artifact store."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            client.set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
            )
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:"):
        location = (reprlab_home() / "artifacts").resolve().as_uri()
    return client.create_experiment(
        name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    )


def log_dataset(client: MlflowClient, run_id: str, dataset: DatasetInput) -> None:
    """Log `dataset` as the run's training input (MLflow's Dataset column and filters)."""
    scheme = urlsplit(dataset.source).scheme
    source_type = "local" if scheme in ("", "file") else scheme
    profile = {"num_rows": sum(dataset.split_sizes.values()), "split_sizes": dataset.split_sizes}
    entity = entities.Dataset(
        name=dataset.name,
        digest=dataset.digest,
        source_type=source_type,
        source=json.dumps({"uri": dataset.source}),
        profile=json.dumps(profile),
    )
    context = entities.InputTag(MLFLOW_DATASET_CONTEXT, "training")
    inputs = [entities.DatasetInput(entity, tags=[context])]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException:
        # Runs logging a dataset new to the store at the same instant both insert it and all
        # but one fail on the store's unique key; by now the row exists, so linking it works.
        client.log_inputs(run_id, datasets=inputs)


def start_run(
    experiment: str,
    run_name: str,
    *,
    params: dict[str, Any],
    config_yaml: str,
    tags: dict[str, str],
    uri: str,
    run_id: str | None = None,
    dataset: DatasetInput | None = None,
) -> str:
    """Open (or reopen, when resuming) a run with its params, its config as `config/job.yaml`,
    its source (MLflow's tags), the package versions, `tags` and its training `dataset`;
    returns the run id. A reopened run keeps what it was opened with. The run stays RUNNING
    until `end_run` (or `tracked`) closes it."""
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id
    tags = {**tags, **source_tags()}
    tags.update({f"version.{name}": value for name, value in package_versions().items()})
    run = client.create_run(ensure_experiment(experiment, uri), run_name=run_name, tags=tags)
    run_id = run.info.run_id
    try:
        client.log_batch(
            run_id,
            params=[Param(key, str(value)) for key, value in params.items()],
            synchronous=True,
        )
        client.log_text(run_id, config_yaml, "config/job.yaml")
        if dataset is not None:
            log_dataset(client, run_id, dataset)
    except BaseException as error:
        mark_failed(run_id, uri, error)
        raise
    return run_id


def run_name_of(run_id: str, uri: str | None = None) -> str | None:
    """The name of MLflow run `run_id` in the store, or None when there is no such run."""
    try:
        return MlflowClient(tracking_uri(uri)).get_run(run_id).info.run_name
    except MlflowException:
        return None


def log_run_file(run_id: str, path: Path, uri: str) -> None:
    """Log the file `path` at the root of run `run_id`'s artifacts (kept by the tracking
    server, so other machines can fetch it)."""
    MlflowClient(uri).log_artifact(run_id, str(path))


def log_run_text(run_id: str, text: str, path: str, uri: str) -> None:
    """Log `text` as the artifact `path` of run `run_id`."""
    MlflowClient(uri).log_text(run_id, text, path)


def fetch_run_file(run_id: str, name: str, folder: Path, uri: str | None = None) -> Path | None:
    """Artifact `name` of run `run_id` downloaded into `folder`; None when the store has no
    such run or the run no such file."""
    try:
        client = MlflowClient(tracking_uri(uri))
        if name not in {item.path for item in client.list_artifacts(run_id)}:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        return Path(client.download_artifacts(run_id, name, str(folder)))
    except MlflowException:
        return None


FAILURE_TAG = "reprlab.failure"
FAILURE_REASON_CHARS = 500


def end_run(run_id: str, uri: str, failed: bool) -> None:
    """Mark the run FINISHED or FAILED; never leave it RUNNING."""
    MlflowClient(uri).set_terminated(run_id, status="FAILED" if failed else "FINISHED")


@contextlib.contextmanager
def tracked(run_id: str, uri: str) -> Iterator[None]:
    """Run a block as the body of an MLflow run: FINISHED if it returns, FAILED if it raises,
    with why in the `reprlab.failure` tag (the exception, KeyboardInterrupt included, still
    propagates)."""
    try:
        yield
    except BaseException as error:
        mark_failed(run_id, uri, error)
        raise
    end_run(run_id, uri, failed=False)


def mark_failed(run_id: str, uri: str, error: BaseException) -> None:
    """End the run FAILED with why in the `reprlab.failure` tag."""
    MlflowClient(uri).set_tag(run_id, FAILURE_TAG, failure_reason(error))
    end_run(run_id, uri, failed=True)


def failure_reason(error: BaseException) -> str:
    """One line saying why a run failed: the exception's type and its first non-empty line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = f": {lines[0]}" if lines else ""
    return f"{type(error).__name__}{first}"[:FAILURE_REASON_CHARS]


class RankZeroLogger:
    """Metric logging from inside a Ray Train worker: a no-op everywhere but world rank 0."""

    def __init__(self, run_id: str | None, uri: str, rank: int) -> None:
        self.enabled = run_id is not None and rank == 0
        self.run_id = run_id
        self.client = MlflowClient(uri) if self.enabled else None

    def log(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch, synchronous=True)


def log_encoder(
    encoder: torch.nn.Module, image_shape: list[int], image_size: int
) -> mlflow.models.model.ModelInfo:
    """Log the trained encoder to the active run as an MLflow PyTorch model (`encoder/`), with
    an input example so it can be loaded and served; requirements are pinned, not inferred."""
    example = torch.zeros(2, image_shape[2], image_size, image_size)
    encoder = encoder.cpu().eval()
    return mlflow.pytorch.log_model(
        encoder,
        name="encoder",
        input_example=example.numpy(),
        pip_requirements=[f"torch=={version('torch')}", f"reprlab=={version('reprlab')}"],
    )


def log_evaluation(
    run_id: str, uri: str, metrics: dict[str, float], settings: dict, artifact: str
) -> None:
    """Add an after-the-fact evaluation to a finished run: its metrics, and its settings and
    results as a JSON artifact (params of a run cannot change, settings may differ per call)."""
    client = MlflowClient(uri)
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
        synchronous=True,
    )
    client.log_dict(run_id, {"settings": settings, "metrics": metrics}, artifact)
