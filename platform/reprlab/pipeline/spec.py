"""A pipeline file: stages run in order, each a job file plus overrides that may name an earlier
stage's run (`${stages.NAME}`, `${stages.previous}`); a stage may repeat, each repetition
following the one before. Read and checked whole, every stage's job included, before anything
runs."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from reprlab.config import (
    ConfigError,
    JobConfig,
    Strict,
    read_yaml,
    set_dotted,
    validate_job,
)

STAGE_REFERENCE = re.compile(r"\$\{stages\.([^}]*)\}")
PREVIOUS = "previous"
"""`${stages.previous}`: the run just before this one (the previous repetition of a repeated
stage, else the stage above)."""


class StageSettings(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="how later stages name it")
    job: str = Field(min_length=1, description="job file, relative to the pipeline file")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="dotted key: value, applied to the job"
    )
    repeat: int = Field(1, ge=1, description="runs of this stage, each after the one before")


class PipelineSettings(Strict):
    name: str = Field(min_length=1)
    experiment: str | None = Field(
        None,
        description="MLflow experiment of the pipeline and its stages (default: the "
        "first stage's tracking.experiment)",
    )
    stages: list[StageSettings] = Field(min_length=1)


@dataclass(frozen=True)
class Stage:
    """One run of a pipeline: its key (the stage's name, `name.k` for repetition k of a
    repeated stage), its job file and the raw job with the overrides applied, and the keys of
    the earlier runs its `${stages.*}` references name, by reference text."""

    key: str
    job_file: Path
    raw: dict[str, Any]
    references: dict[str, str]

    def job(self, run_names: dict[str, str]) -> JobConfig:
        """The stage's job with each reference replaced by the run name `run_names` gives the
        key it names."""
        raw = _substituted(self.raw, {ref: run_names[key] for ref, key in self.references.items()})
        return validate_job(raw, f"stage {self.key} ({self.job_file})")

    def checked_job(self) -> JobConfig:
        """The stage's job before any run exists, each reference standing in as
        `<stages.KEY>`: what can be checked before the pipeline starts."""
        return self.job({key: f"<stages.{key}>" for key in self.references.values()})

    def upstream(self, run_names: dict[str, str]) -> list[str]:
        """The run names this stage's references name."""
        return sorted({run_names[key] for key in self.references.values()})


@dataclass(frozen=True)
class Pipeline:
    """A checked pipeline file: its name, experiment and runs in order."""

    name: str
    path: Path
    experiment: str
    stages: tuple[Stage, ...]


def load_pipeline(path: str | Path) -> Pipeline:
    """The pipeline in `path` with every stage's job read, overridden and validated (references
    stand in as `<stages.KEY>`); ConfigError naming the file, stage and key otherwise."""
    path = Path(path)
    raw = read_yaml(path, "pipeline")
    try:
        settings = PipelineSettings.model_validate(raw if raw is not None else {})
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "file"
        raise ConfigError(f"{path}: {where}: {problem['msg']}") from None
    names = [stage.name for stage in settings.stages]
    if len(set(names)) < len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise ConfigError(f"{path}: stages: the name {twice!r} is used twice; names must differ")
    stages: list[Stage] = []
    jobs: list[JobConfig] = []
    last_key: dict[str, str] = {}
    for settings_stage in settings.stages:
        for repetition in range(1, settings_stage.repeat + 1):
            key = settings_stage.name
            if settings_stage.repeat > 1:
                key = f"{key}.{repetition}"
            previous = stages[-1].key if stages else None
            stage = _stage(path, settings_stage, key, previous, last_key)
            jobs.append(stage.checked_job())
            stages.append(stage)
        last_key[settings_stage.name] = stages[-1].key
    experiment = settings.experiment or jobs[0].tracking.experiment
    return Pipeline(settings.name, path, experiment, tuple(stages))


def _stage(
    path: Path,
    settings: StageSettings,
    key: str,
    previous: str | None,
    earlier: dict[str, str],
) -> Stage:
    """Stage `key` of `settings`: its job file read, the overrides applied, each reference
    resolved to the key of an earlier run (`earlier`: stage name -> its last run's key)."""
    job_file = (path.parent / settings.job).resolve()
    raw = read_yaml(job_file, "job") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{job_file}: a job file must be a mapping of keys")
    raw = copy.deepcopy(raw)
    references: dict[str, str] = {}
    for dotted, value in settings.overrides.items():
        try:
            set_dotted(raw, dotted, value)
        except ConfigError as error:
            raise ConfigError(f"{path}: stage {key}: overrides.{dotted}: {error}") from None
        for name in _referenced(value):
            text = f"${{stages.{name}}}"
            if name == PREVIOUS and previous is not None:
                references[text] = previous
            elif name in earlier:
                references[text] = earlier[name]
            else:
                allowed = [f"${{stages.{n}}}" for n in earlier]
                allowed += [f"${{stages.{PREVIOUS}}}"] if previous else []
                raise ConfigError(
                    f"{path}: stage {key}: overrides.{dotted}: {text} names no earlier stage; "
                    f"allowed: {', '.join(allowed) or 'none (the first stage names none)'}"
                )
    return Stage(key, job_file, raw, references)


def _referenced(value: Any) -> list[str]:
    """The stage names `${stages.NAME}` references in `value` (strings inside lists and
    mappings too)."""
    if isinstance(value, str):
        return STAGE_REFERENCE.findall(value)
    if isinstance(value, dict):
        return [name for item in value.values() for name in _referenced(item)]
    if isinstance(value, list):
        return [name for item in value for name in _referenced(item)]
    return []


def _substituted(value: Any, runs: dict[str, str]) -> Any:
    """`value` with every reference text replaced by its run name."""
    if isinstance(value, str):
        for text, run_name in runs.items():
            value = value.replace(text, run_name)
        return value
    if isinstance(value, dict):
        return {key: _substituted(item, runs) for key, item in value.items()}
    if isinstance(value, list):
        return [_substituted(item, runs) for item in value]
    return value
