"""Run folders and the typed run record: what a run wrote, where, and how to find it again.

`$REPRLAB_HOME/runs/<run name>/` holds the run's log file and `reprlab_run.json`, the record
that ties the folder to its job, its checkpoints (here too, unless the job's `storage.path` puts
them on shared storage) and its MLflow run, so that `--resume`, `reprlab eval` and later
pipelines rebuild exactly what was trained."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from reprlab.config import ConfigError, JobConfig
from reprlab.home import reprlab_home
from reprlab.storage import STATE_FILE, checkpoint_dirs, local_checkpoint
from reprlab.tracking.mlflow import fetch_run_file, run_name_of

RUN_RECORD = "reprlab_run.json"
LOG_FILE = "ray.log"
CHECKPOINT_CACHE = "checkpoint_cache"
"""Where a run folder keeps local copies of checkpoints that live on shared storage."""


def runs_root() -> Path:
    """The run folders: $REPRLAB_HOME/runs."""
    return reprlab_home() / "runs"


def checkpoint_root(job: JobConfig) -> str:
    """Where Ray Train keeps the job's runs' checkpoints: `storage.path`, else the runs folder."""
    return job.storage.path or str(runs_root())


def run_checkpoints(job: JobConfig, run_name: str) -> str:
    """The folder or URI of run `run_name`'s checkpoints (Ray Train's storage_path/name)."""
    return f"{checkpoint_root(job).rstrip('/')}/{run_name}"


@dataclass(frozen=True)
class RunRecord:
    """One run: its name and folder, the job that trained it, the dataset's channels and
    classes (to rebuild the module), and its MLflow run; its checkpoints are where
    `run_checkpoints(job, run_name)` says."""

    run_name: str
    storage: Path
    job: JobConfig
    in_chans: int
    num_classes: int
    mlflow_run_id: str
    tracking_uri: str

    @property
    def log_file(self) -> Path:
        """Ray's own output for this run (per-report, checkpoint and Ray Data lines)."""
        return self.storage / LOG_FILE

    def save(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        payload = {
            "run_name": self.run_name,
            "job": self.job.model_dump(mode="json"),
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "mlflow_run_id": self.mlflow_run_id,
            "tracking_uri": self.tracking_uri,
        }
        (self.storage / RUN_RECORD).write_text(json.dumps(payload))

    @classmethod
    def load(cls, storage: Path) -> RunRecord:
        """The record in a run folder; ValueError (one line) when absent or too old to use."""
        path = storage / RUN_RECORD
        if not path.is_file():
            raise ValueError(f"{storage}: not a run folder (no {RUN_RECORD})")
        payload = json.loads(path.read_text())
        if "job" not in payload:
            raise ValueError(
                f"{path}: written by an older reprlab (no job recorded); rerun the job"
            )
        return cls(
            run_name=payload.get("run_name", storage.name),
            storage=storage,
            job=JobConfig.model_validate(payload["job"]),
            in_chans=payload["in_chans"],
            num_classes=payload["num_classes"],
            mlflow_run_id=payload["mlflow_run_id"],
            tracking_uri=payload["tracking_uri"],
        )

    @property
    def checkpoints(self) -> str:
        """The folder or URI holding the run's checkpoints: its shared storage when the job
        names one, else the run folder itself, wherever it lies now (another REPRLAB_HOME, a
        copied folder)."""
        if self.job.storage.path is None:
            return str(self.storage)
        return run_checkpoints(self.job, self.run_name)

    def latest_checkpoint(self) -> Path:
        """A local folder with the newest checkpoint (Ray Train names them checkpoint_<time>),
        copied into the run folder first when it lives on shared storage."""
        found = checkpoint_dirs(self.checkpoints)
        if not found:
            raise ValueError(f"{self.checkpoints}: no checkpoint yet (no checkpoint_*/)")
        return local_checkpoint(found[-1], self.storage / CHECKPOINT_CACHE)


def run_to_resume(name: str) -> RunRecord | None:
    """The record of an earlier run to resume (None when it died before writing one);
    ConfigError naming the runs there when there is no run by that name. Runs before Ray."""
    storage = runs_root() / name
    if not storage.is_dir():
        known = sorted(p.name for p in runs_root().glob("*") if p.is_dir()) or ["none yet"]
        raise ConfigError(
            f"--resume: no run named '{name}' in {runs_root()}; runs: {', '.join(known)}"
        )
    try:
        return RunRecord.load(storage)
    except ValueError:
        return None


def _storage_of_mlflow_run(run_id: str) -> Path | None:
    """The run folder of MLflow run `run_id`, or None when the store has no such run; a run
    recorded on another machine (a cluster's driver) gets its folder here, with the run record
    fetched from the tracking store."""
    name = run_name_of(run_id)
    if name is None:
        return None
    storage = runs_root() / name
    if not (storage / RUN_RECORD).is_file():
        fetch_run_file(run_id, RUN_RECORD, storage)
    return storage


def find_trained(source: str) -> tuple[RunRecord, Path]:
    """The run and checkpoint folder meant by `source`: a checkpoint folder, a run folder, a
    run name under runs_root() or an MLflow run id (whose checkpoints may be on shared storage
    and its record only in the tracking store); ValueError (one line) when none fits."""
    path = Path(source).expanduser()
    if (path / STATE_FILE).is_file():
        return RunRecord.load(path.parent), path
    folders = [path, runs_root() / source]
    mlflow_run = None
    if not any((folder / RUN_RECORD).is_file() for folder in folders):
        mlflow_run = _storage_of_mlflow_run(source)  # asks the tracking store only now
        folders.append(mlflow_run)
    for storage in folders:
        if storage is not None and (storage / RUN_RECORD).is_file():
            record = RunRecord.load(storage)
            return record, record.latest_checkpoint()
    if mlflow_run is not None:
        raise ValueError(
            f"{source}: MLflow run '{mlflow_run.name}' has no {RUN_RECORD} (not a reprlab run, "
            "or recorded before reprlab logged its record); give its run folder instead"
        )
    raise ValueError(
        f"{source}: not a checkpoint folder ({STATE_FILE}), a run folder or name under "
        f"{runs_root()}, or an MLflow run id"
    )
