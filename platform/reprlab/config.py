"""Job files: pydantic models of a job, loaded from YAML plus `key=value` overrides.

Everything is validated here, before Ray starts, and a bad job fails with one line naming the
file, the dotted key, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reprlab.methods import METHODS, MethodArgs, method_class


class ConfigError(ValueError):
    """A job file or override that cannot be run; the message is one line."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(Strict):
    """Parameters of the view policy (data/augment.py); all searchable by Ray Tune."""

    policy: Literal["simclr"] = "simclr"
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = Field(0.5, ge=0, le=1)
    brightness: float = Field(0.4, ge=0, le=1)
    contrast: float = Field(0.4, ge=0, le=1)
    saturation: float = Field(0.4, ge=0, le=1)
    hue: float = Field(0.1, ge=0, le=0.5)
    jitter_p: float = Field(0.8, ge=0, le=1)
    grayscale_p: float = Field(0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> AugmentConfig:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(
                f"crop_scale: must be 0 < low <= high <= 1, got {list(self.crop_scale)}"
            )
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio: must be 0 < low <= high, got {list(self.crop_ratio)}")
        return self


class DataConfig(Strict):
    dataset: str = "mnist5k"
    train_split: str = "train"
    eval_split: str = "test"
    image_size: int = Field(28, gt=0, le=1024)
    batch_size: int = Field(256, ge=2, description="global batch, split evenly across workers")
    augment: AugmentConfig = AugmentConfig()
    map_batch_size: int = Field(1024, gt=0, description="rows per Ray Data augmentation task")
    cache: bool = Field(True, description="keep shard rows in the object store across epochs")
    data_cpus: float = Field(1.0, gt=0, description="CPUs Ray Data may use beside the trainers")


class ModelConfig(Strict):
    backbone: Literal["conv4", "resnet18", "resnet50"] = "conv4"
    width: int | None = Field(None, gt=0, description="conv4 filters per layer (default 64)")
    global_bn: bool = Field(False, description="batch-norm statistics over all workers' batches")


class OptimConfig(Strict):
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, description="learning rate at the global batch size")
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    epochs: int = Field(10, gt=0)
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float | None = Field(None, gt=0)


class ScalingConfig(Strict):
    num_workers: int = Field(2, ge=0, description="Ray Train workers; 0 runs in-process")
    use_gpu: bool = False
    cpus_per_worker: float = Field(0.5, gt=0)
    torch_threads: int = Field(1, gt=0, description="intra-op threads per CPU worker")


class EvalConfig(Strict):
    linear_probe: bool = True
    knn: bool = True
    knn_k: int = Field(20, gt=0)
    knn_temperature: float = Field(0.07, gt=0)


class TrackingConfig(Strict):
    experiment: str = "reprlab"
    tracking_uri: str | None = Field(None, description="default: MLFLOW_TRACKING_URI, else SQLite")
    log_model: bool = True
    augment_grid_pairs: int = Field(8, ge=0)


class JobConfig(Strict):
    """One experiment: what to train, on what data, how, and where to record it."""

    name: str = Field("job", min_length=1)
    seed: int = 0
    method: str = "simclr"
    method_args: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    scaling: ScalingConfig = ScalingConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _method_known_and_args_valid(self) -> JobConfig:
        if self.method not in METHODS:
            allowed = ", ".join(repr(name) for name in sorted(METHODS))
            raise ValueError(f"method: must be one of {allowed}, got {self.method!r}")
        try:
            self.parsed_method_args()
        except ValidationError as error:
            args_model = method_class(self.method).Args
            raise ValueError(_describe(error.errors()[0], args_model, "method_args")) from None
        return self

    @model_validator(mode="after")
    def _batch_splits_evenly(self) -> JobConfig:
        workers = max(1, self.scaling.num_workers)
        if self.data.batch_size % workers:
            raise ValueError(
                f"data.batch_size: must be a multiple of scaling.num_workers ({workers}), "
                f"got {self.data.batch_size}"
            )
        return self

    def parsed_method_args(self) -> MethodArgs:
        """The method's own validated args model."""
        return method_class(self.method).Args.model_validate(self.method_args)


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "literal_error": "must be one of {expected}",
    "too_short": "must have at least {min_length} item(s)",
    "string_too_short": "must not be empty",
}


def _describe(error: dict, model: type[BaseModel], prefix: str = "") -> str:
    """One pydantic error as `dotted.key: what is allowed, got VALUE`."""
    location = [str(part) for part in error["loc"]]
    key = ".".join(([prefix] if prefix else []) + location) or "<job>"
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, location[:-1])
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return message if not location else f"{key}.{message}"
    if kind in _MESSAGES:
        message = _MESSAGES[kind].format(**ctx)
    return f"{key}: {message}, got {error.get('input')!r}"


def _allowed_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    current: Any = model
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return sorted(getattr(current, "model_fields", {}))


def validate_job(raw: Any, source: str = "<job>") -> JobConfig:
    """A JobConfig from a plain dict, or ConfigError naming `source` and the first bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: a job file must be a mapping of keys, got {type(raw).__name__}"
        )
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source}: {_describe(error.errors()[0], JobConfig)}") from None


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `dotted.key=value` override in place; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}': expected key=value, e.g. optim.epochs=3")
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{assignment}': empty key segment")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"override '{assignment}': {prefix} is a value, not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


def load_job(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobConfig:
    """Read a job YAML, apply overrides, validate. Every failure is one-line ConfigError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such job file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{path}:{where} not valid YAML ({getattr(error, 'problem', error)})"
        ) from None
    if isinstance(raw, dict):
        for assignment in overrides:
            apply_override(raw, assignment)
    return validate_job(raw, str(path))


def to_yaml(job: JobConfig) -> str:
    """The fully resolved job, defaults included, as YAML (logged with every run)."""
    return yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False)


def flatten(job: JobConfig) -> dict[str, Any]:
    """`dotted.key -> value` for every leaf of the resolved job, method args resolved too."""
    resolved = job.model_dump(mode="json")
    resolved["method_args"] = job.parsed_method_args().model_dump(mode="json")
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(resolved, "")
    return flat
