"""Run a pipeline's stages in order as one MLflow parent run with a child run per stage (lineage
in tags), recording in `$REPRLAB_HOME/pipelines/<name>/` which runs finished, so that
`--resume` skips them and continues an interrupted stage from its last checkpoint."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric
from rich.console import Console

from reprlab.config import ConfigError, JobConfig
from reprlab.home import reprlab_home
from reprlab.pipeline.spec import Pipeline, Stage
from reprlab.runs import runs_root
from reprlab.tracking.mlflow import start_run, tracked, tracking_uri
from reprlab.train.prepare import open_dataset, prepare
from reprlab.train.run import run_prepared

PIPELINE_RECORD = "pipeline.json"


def pipelines_root() -> Path:
    """The pipeline folders: $REPRLAB_HOME/pipelines."""
    return reprlab_home() / "pipelines"


@dataclass
class PipelineRecord:
    """A pipeline run: its name, the pipeline it ran and its runs' keys in order, its MLflow
    parent run, the run each started stage trains (stage key -> run name) and which finished,
    with their final metrics."""

    name: str
    pipeline: str
    keys: list[str]
    parent_run_id: str
    tracking_uri: str
    runs: dict[str, str] = field(default_factory=dict)
    finished: dict[str, dict[str, float]] = field(default_factory=dict)

    def save(self) -> None:
        folder = pipelines_root() / self.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PIPELINE_RECORD).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, name: str) -> PipelineRecord:
        """The record of pipeline run `name`; ConfigError naming those there when none."""
        path = pipelines_root() / name / PIPELINE_RECORD
        if not path.is_file():
            known = sorted(p.parent.name for p in pipelines_root().glob(f"*/{PIPELINE_RECORD}"))
            raise ConfigError(
                f"--resume: no pipeline run named '{name}' in {pipelines_root()}; pipeline "
                f"runs: {', '.join(known) or 'none yet'}"
            )
        return cls(**json.loads(path.read_text()))


def _checked_against(record: PipelineRecord, pipeline: Pipeline) -> None:
    """ConfigError (one line) when `pipeline` is not the one `record` ran, or its runs differ."""
    keys = [stage.key for stage in pipeline.stages]
    if record.pipeline != pipeline.name or record.keys != keys:
        raise ConfigError(
            f"--resume: {record.name} ran pipeline {record.pipeline!r} with stages "
            f"{', '.join(record.keys)}; {pipeline.path} is {pipeline.name!r} with stages "
            f"{', '.join(keys)}"
        )


def open_pipeline(pipeline: Pipeline, resume: str | None) -> PipelineRecord:
    """Open (or reopen) the pipeline's MLflow parent run and its record; every stage's dataset
    is checked first, so a stage that cannot start fails before the first one runs."""
    jobs = [stage.checked_job() for stage in pipeline.stages]
    for job in jobs:
        open_dataset(job)
    resumed = PipelineRecord.load(resume) if resume else None
    if resumed is not None:
        _checked_against(resumed, pipeline)
    uri = tracking_uri(jobs[0].tracking.tracking_uri)
    name = resume or f"{pipeline.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = start_run(
        pipeline.experiment,
        name,
        params={f"stage.{stage.key}.job": str(stage.job_file) for stage in pipeline.stages},
        config_yaml=pipeline.path.read_text(),
        tags={"reprlab.kind": "pipeline", "reprlab.pipeline": pipeline.name},
        uri=uri,
        run_id=resumed.parent_run_id if resumed else None,
    )
    record = resumed or PipelineRecord(
        name, pipeline.name, [stage.key for stage in pipeline.stages], run_id, uri
    )
    record.save()
    return record


def _stage_job(pipeline: Pipeline, stage: Stage, record: PipelineRecord) -> JobConfig:
    """The stage's job with its references resolved and its runs in the pipeline's experiment
    and tracking store, so the parent run shows them as its children."""
    job = stage.job(record.runs)
    job.tracking.experiment = pipeline.experiment
    job.tracking.tracking_uri = record.tracking_uri
    return job


def _log_stage(record: PipelineRecord, key: str, run_name: str, metrics: dict[str, float]) -> None:
    """Record on the parent run which run stage `key` trained and its final metrics."""
    client = MlflowClient(record.tracking_uri)
    client.set_tag(record.parent_run_id, f"stage.{key}.run", run_name)
    stamp = int(time.time() * 1000)
    client.log_batch(
        record.parent_run_id,
        metrics=[Metric(f"{key}/{name}", value, stamp, 0) for name, value in metrics.items()],
        synchronous=True,
    )


def _run_stage(
    pipeline: Pipeline,
    stage: Stage,
    record: PipelineRecord,
    console: Console | None,
    verbose: bool,
) -> None:
    """Run `stage` unless it finished earlier (an interrupted run of it resumes from its last
    checkpoint), as a child of the pipeline's parent run; record it when it finishes."""
    if stage.key in record.finished:
        if console is not None:
            console.print(
                f"stage {stage.key}: finished earlier as {record.runs[stage.key]}",
                highlight=False,
            )
        return
    job = _stage_job(pipeline, stage, record)
    started = record.runs.get(stage.key)
    again = started if started and (runs_root() / started).is_dir() else None
    prepared = prepare(job, resume=again)
    record.runs[stage.key] = prepared.run_name
    record.save()
    if console is not None:
        console.rule(f"stage {stage.key}: {prepared.run_name}")
    tags = {
        "mlflow.parentRunId": record.parent_run_id,
        "reprlab.pipeline": record.name,
        "reprlab.pipeline.stage": stage.key,
        "reprlab.pipeline.upstream": ",".join(stage.upstream(record.runs)),
    }
    summary = run_prepared(prepared, console=console, verbose=verbose, tags=tags)
    record.finished[stage.key] = summary.metrics
    record.save()
    _log_stage(record, stage.key, prepared.run_name, summary.metrics)


def run_pipeline(
    pipeline: Pipeline,
    *,
    resume: str | None = None,
    console: Console | None = None,
    verbose: bool = False,
) -> PipelineRecord:
    """Run every stage not yet finished, in order; the parent run ends FINISHED, or FAILED with
    why when a stage fails or is interrupted (`--resume NAME` continues from there)."""
    record = open_pipeline(pipeline, resume)
    with tracked(record.parent_run_id, record.tracking_uri):
        for stage in pipeline.stages:
            try:
                _run_stage(pipeline, stage, record, console, verbose)
            except BaseException:
                if console is not None:
                    console.print(
                        f"pipeline {record.name} stopped at stage {stage.key}; continue it: "
                        f"reprlab pipeline {pipeline.path} --resume {record.name}",
                        highlight=False,
                    )
                raise
    return record
