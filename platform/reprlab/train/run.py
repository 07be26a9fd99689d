"""A whole run, composed of its phases: prepare (train/prepare.py), record (MLflow run, run
record, preview figure), fit (train/trainer.py), evaluate (the final probes) and the closing
record (evaluation, encoder). `reprlab run` calls `run_prepared`; `reprlab eval` and a Tune
trial reuse the phases they need."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import ray.train
import torch
from rich.console import Console

from reprlab.augment.ops import resized, to_float_nchw
from reprlab.config import ConfigError, flatten, to_yaml
from reprlab.data.handle import DatasetHandle
from reprlab.eval.features import evaluate_encoder
from reprlab.methods import Method, method_class
from reprlab.methods.collapse import collapse_among
from reprlab.runs import LOG_FILE, RUN_RECORD, RunRecord
from reprlab.tracking.figures import image_grid_figure
from reprlab.tracking.mlflow import (
    DatasetInput,
    log_encoder,
    log_run_file,
    log_run_text,
    start_run,
    tracked,
    tracking_uri,
)
from reprlab.train.build import load_trained_method
from reprlab.train.closed_form import fit_in_closed_form
from reprlab.train.placement import check_fits_cluster
from reprlab.train.prepare import PreparedRun
from reprlab.train.progress import LiveProgress
from reprlab.train.session import RaySession
from reprlab.train.sources import batch_source
from reprlab.train.trainer import fit


@dataclass(frozen=True)
class RunSummary:
    """What a finished run produced (its record) and its evaluation metrics."""

    record: RunRecord
    metrics: dict[str, float] = field(default_factory=dict)


def dataset_input(dataset: DatasetHandle) -> DatasetInput:
    """What MLflow records of a run's training dataset: name, source, digest, split sizes."""
    return DatasetInput(
        name=dataset.name,
        source=dataset.location,
        digest=dataset.digest,
        split_sizes={split: dataset.rows(split) for split in dataset.splits},
    )


def open_record(prepared: PreparedRun, tags: dict[str, str] | None = None) -> RunRecord:
    """Start the record phase: open the run's MLflow run (reopen it when resuming) with the
    resolved config, provenance, its dataset as training input and tags (plus `tags`, e.g. a
    sweep trial's parent run), and write the run record into the run's folder."""
    job = prepared.job
    uri = tracking_uri(job.tracking.tracking_uri)
    source = batch_source(job, prepared.dataset)
    resumed = prepared.resumed is not None
    run_id = start_run(
        job.tracking.experiment,
        prepared.run_name,
        params=flatten(job) | source.run_params(),
        config_yaml=to_yaml(job),
        tags={"reprlab.job": job.name, "reprlab.method": job.method, **(tags or {})},
        uri=uri,
        run_id=prepared.resumed.mlflow_run_id if resumed else None,
        dataset=dataset_input(prepared.dataset),
    )
    record = RunRecord(
        run_name=prepared.run_name,
        storage=prepared.storage,
        job=job,
        in_chans=prepared.dataset.in_chans,
        num_classes=prepared.dataset.num_classes,
        mlflow_run_id=run_id,
        tracking_uri=uri,
    )
    record.save()
    log_run_file(run_id, record.storage / RUN_RECORD, uri)  # for `reprlab eval` elsewhere
    if not resumed:
        for path, text in source.run_files().items():
            log_run_text(run_id, text, path, uri)
    return record


def log_preview(prepared: PreparedRun) -> None:
    """Log the batch source's picture of what training sees into the active MLflow run."""
    job = prepared.job
    source = batch_source(job, prepared.dataset)
    figure = source.preview_figure(job.tracking.augment_grid_pairs, job.seed)
    if figure is not None:
        mlflow.log_figure(figure, source.preview_artifact)


def evaluate(prepared: PreparedRun, method: Method) -> dict[str, float]:
    """The evaluate phase: linear probe, kNN, retrieval and clustering of the frozen encoder
    when the job asks, the held-out accuracy of a method that classifies."""
    return evaluate_encoder(method, prepared.dataset, prepared.job)


def log_pictures(prepared: PreparedRun, method: Method, count: int = 8) -> None:
    """Log the method's pictures of what it learnt, drawn for the first `count` held-out images,
    into the active MLflow run."""
    job = prepared.job
    images, _ = prepared.dataset.read(job.data.eval_split)
    sample = resized(to_float_nchw(torch.from_numpy(images[:count])), job.data.image_size)
    with torch.no_grad():
        found = method.pictures(sample)
    for path, pictures in found.items():
        mlflow.log_figure(image_grid_figure(pictures, f"{job.method}: {path}"), path)


def trained_method(record: RunRecord, result: ray.train.Result) -> Method:
    """The method with the weights of the fit's last checkpoint."""
    with result.checkpoint.as_directory() as directory:
        return load_trained_method(record, Path(directory))


def run_prepared(
    prepared: PreparedRun,
    *,
    console: Console | None = None,
    verbose: bool = False,
    tags: dict[str, str] | None = None,
) -> RunSummary:
    """Record (with `tags`, e.g. a pipeline's parent run), fit, evaluate and record again; the
    MLflow run ends FINISHED, or FAILED with its last checkpoint kept. With `console`, training
    shows a live progress display there.
    ConfigError, before anything is recorded, for a job a whole run cannot finish (on this
    cluster)."""
    job = prepared.job
    closed_form = method_class(job.method).fits_in_closed_form
    if job.scaling.max_workers == 0 and not closed_form:
        raise ConfigError(
            "scaling.num_workers: a whole run needs >= 1 Ray Train worker (0 runs the loop "
            "in-process, as tests do, and keeps no checkpoint to evaluate), got 0"
        )
    if not closed_form:
        with RaySession(prepared.storage / LOG_FILE, verbose):
            check_fits_cluster(job, tracking_uri(job.tracking.tracking_uri))
    record = open_record(prepared, tags)
    metrics: dict[str, float] = {}
    with tracked(record.mlflow_run_id, record.tracking_uri):
        with mlflow.start_run(run_id=record.mlflow_run_id):
            if closed_form:
                method = fit_in_closed_form(prepared)
            else:
                method, metrics = train_with_ray(prepared, record, console, verbose)
            final = evaluate(prepared, method)
            mlflow.log_metrics(final)
            log_pictures(prepared, method)
            if job.tracking.log_model:
                log_encoder(method.backbone, prepared.dataset.image_shape, job.data.image_size)
    return RunSummary(record, metrics | final)


def train_with_ray(
    prepared: PreparedRun, record: RunRecord, console: Console | None, verbose: bool
) -> tuple[Method, dict[str, float]]:
    """The fit phase of a trained method: the preview figure, then Ray Train with a live
    progress display on `console`; the trained method and its final few-shot test metrics.
    RepresentationCollapse, alone, when a worker stopped training because it collapsed."""
    log_preview(prepared)
    with RaySession(record.log_file, verbose):
        live = LiveProgress(console, prepared.job.optim.epochs) if console else None
        with live or contextlib.nullcontext():
            try:
                result = fit(
                    prepared,
                    tracking_uri=record.tracking_uri,
                    run_id=record.mlflow_run_id,
                    progress=live.board if live else None,
                )
            except Exception as error:
                collapse = collapse_among(error)
                if collapse is None:
                    raise
                raise collapse from None  # the run ends FAILED saying so in one line
    metrics = {
        key: value
        for key, value in (result.metrics or {}).items()
        if key.startswith("fewshot/test")
    }
    return trained_method(record, result), metrics
