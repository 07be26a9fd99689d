"""The fine-tuning protocol of `reprlab eval RUN --protocol finetune`: an earlier run's encoder
fine-tuned on a dataset (its own or another: channels and image size adapted) with K labels per
class, one whole run per K, each a child of the evaluated run in MLflow, whose accuracies are
logged into that run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from reprlab.config import ConfigError, JobConfig, validate_job
from reprlab.data.handle import DatasetHandle
from reprlab.runs import RunRecord
from reprlab.tracking.mlflow import log_evaluation
from reprlab.train.prepare import prepare
from reprlab.train.run import run_prepared

ALL_LABELS = "all"


@dataclass(frozen=True)
class FinetuneSettings:
    """What the protocol varies: labels per class (a count or 'all'), and how each run
    fine-tunes (frozen stages, epochs, learning rate, seed of the label subsets)."""

    labels_per_class: tuple[str, ...]
    freeze: str = "none"
    epochs: int = 5
    lr: float = 0.01
    seed: int = 0


def parse_labels_per_class(text: str) -> tuple[str, ...]:
    """`1,10,all` -> ("1", "10", "all"), each once; ConfigError naming --labels-per-class
    otherwise."""
    counts = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not counts or not all(c == ALL_LABELS or (c.isdigit() and int(c) > 0) for c in counts):
        raise ConfigError(
            f"--labels-per-class: positive integers or 'all', comma-separated, got {text!r}"
        )
    return counts


def finetune_job(
    record: RunRecord,
    checkpoint: Path,
    dataset: DatasetHandle,
    labels: str,
    settings: FinetuneSettings,
) -> JobConfig:
    """The job fine-tuning `record`'s encoder (at `checkpoint`) on `dataset` with `labels` per
    class: the run's model, image size and scaling, a new head for the dataset's classes, weak
    views (translation, no flip) and SGD, scored by held-out accuracy."""
    source = record.job
    model = source.model.model_dump(mode="json") | {"init_from": str(checkpoint), "teacher": None}
    raw = {
        "name": f"finetune_{dataset.name}_{labels}",
        "seed": settings.seed,
        "method": "finetune",
        "method_args": {"num_classes": dataset.num_classes, "freeze": settings.freeze},
        "data": {
            "dataset": dataset.name,
            "image_size": source.data.image_size,
            "batch_size": 64,
            "labels_per_class": None if labels == ALL_LABELS else int(labels),
            "augment": {"policy": "weak", "hflip_p": 0.0, "translate": 0.125},
        },
        "model": model,
        "optim": {
            "optimizer": "sgd",
            "lr": settings.lr,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "epochs": settings.epochs,
            "warmup_epochs": 0,
        },
        "scaling": source.scaling.model_dump(mode="json"),
        "eval": {"linear_probe": False, "knn": False, "online_linear": False},
        "tracking": {
            "experiment": source.tracking.experiment,
            "tracking_uri": record.tracking_uri,
            "log_model": False,
        },
    }
    return validate_job(raw, f"--protocol finetune on {dataset.name}")


def finetune_protocol(
    record: RunRecord,
    checkpoint: Path,
    dataset: DatasetHandle,
    settings: FinetuneSettings,
    console: Console | None = None,
) -> dict[str, float]:
    """Fine-tune `record`'s encoder once per labels-per-class setting; the held-out accuracies
    (`finetune/<dataset>/<K>_acc`), also logged into `record`'s MLflow run with the settings
    and the runs that produced them."""
    jobs = {
        labels: finetune_job(record, checkpoint, dataset, labels, settings)
        for labels in settings.labels_per_class
    }
    prepared = {labels: prepare(job) for labels, job in jobs.items()}  # all checked before Ray
    tags = {"mlflow.parentRunId": record.mlflow_run_id, "reprlab.finetune_of": record.run_name}
    metrics, runs = {}, {}
    for labels, run in prepared.items():
        if console is not None:
            console.rule(f"fine-tuning {record.run_name} on {dataset.name}, {labels} per class")
        summary = run_prepared(run, console=console, tags=tags)
        metrics[f"finetune/{dataset.name}/{labels}_acc"] = summary.metrics["eval/classifier_acc"]
        runs[labels] = summary.record.run_name
    described = {
        "dataset": dataset.name,
        "labels_per_class": list(settings.labels_per_class),
        "freeze": settings.freeze,
        "epochs": settings.epochs,
        "lr": settings.lr,
        "seed": settings.seed,
        "checkpoint": str(checkpoint),
        "runs": runs,
    }
    log_evaluation(
        record.mlflow_run_id,
        record.tracking_uri,
        metrics,
        described,
        f"eval/finetune_{dataset.name}.json",
    )
    return metrics
