"""Find the encoder of an earlier run (a checkpoint folder, a run folder or name, or an MLflow
run id) and load it with the job that trained it, for evaluation after the fact."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from reprlab.config import JobConfig
from reprlab.data.shards import read_split
from reprlab.eval.features import extract_features
from reprlab.eval.few_shot import frozen_fewshot, match_channels
from reprlab.methods import Method
from reprlab.train.checkpoint import STATE_FILE, load_checkpoint
from reprlab.train.loop import make_training_module
from reprlab.train.trainer import RUN_RECORD, runs_root


@dataclass(frozen=True)
class TrainedRun:
    """A run's latest checkpoint, the job that wrote it and where its MLflow run lives."""

    checkpoint: Path
    job: JobConfig
    in_chans: int
    num_classes: int
    mlflow_run_id: str
    tracking_uri: str


def _latest_checkpoint(storage: Path) -> Path:
    """Ray Train names checkpoints checkpoint_<timestamp>: the last name is the newest."""
    found = sorted(p.parent for p in storage.glob(f"checkpoint_*/{STATE_FILE}"))
    if not found:
        raise ValueError(f"{storage}: no checkpoint yet (no checkpoint_*/{STATE_FILE})")
    return found[-1]


def _storage_of_mlflow_run(run_id: str) -> Path | None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from reprlab.tracking.mlflow import tracking_uri

    try:
        run = MlflowClient(tracking_uri()).get_run(run_id)
    except MlflowException:
        return None
    return runs_root() / run.info.run_name


def resolve_trained(source: str) -> TrainedRun:
    """`source` may be a checkpoint folder, a run folder, a run name under runs_root() or an
    MLflow run id; ValueError (one line) when it is none of them or predates run records."""
    path = Path(source).expanduser()
    if (path / STATE_FILE).is_file():
        checkpoint, storage = path, path.parent
    else:
        storage = path if (path / RUN_RECORD).is_file() else runs_root() / source
        if not (storage / RUN_RECORD).is_file():
            storage = _storage_of_mlflow_run(source) or storage
        if not (storage / RUN_RECORD).is_file():
            raise ValueError(
                f"{source}: not a checkpoint folder ({STATE_FILE}), a run folder or name under "
                f"{runs_root()}, or an MLflow run id"
            )
        checkpoint = _latest_checkpoint(storage)
    record_path = storage / RUN_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if "job" not in record:
        raise ValueError(
            f"{record_path}: written by an older reprlab (no job recorded); rerun the job"
        )
    return TrainedRun(
        checkpoint=checkpoint,
        job=JobConfig.model_validate(record["job"]),
        in_chans=record["in_chans"],
        num_classes=record["num_classes"],
        mlflow_run_id=record["mlflow_run_id"],
        tracking_uri=record["tracking_uri"],
    )


def load_trained_method(run: TrainedRun) -> Method:
    """The run's method with its checkpoint's weights, on CPU, in eval mode."""
    module = make_training_module(run.job, run.in_chans, run.num_classes)
    load_checkpoint(run.checkpoint, module)
    return module.method.eval()


def fewshot_of_run(
    run: TrainedRun,
    dataset_dir: Path,
    *,
    split: str,
    ways: int,
    shots: list[int],
    queries: int,
    episodes: int,
    seed: int,
) -> dict[str, float]:
    """The run's frozen encoder scored on fixed episodes of `split` of another (or the same)
    dataset: images matched to its channels and input size, then embedded once."""
    images, labels, _ = read_split(dataset_dir, split)
    method = load_trained_method(run)
    images = match_channels(images, run.in_chans)
    features = torch.from_numpy(extract_features(method, images, run.job.data.image_size))
    return frozen_fewshot(
        features, labels, ways=ways, shots=shots, queries=queries, episodes=episodes, seed=seed
    )
