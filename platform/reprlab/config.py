"""Job files: pydantic models of a job, loaded from YAML plus `key=value` overrides.

Everything is validated here, before Ray starts, and a bad job fails with one line naming the
file, the dotted key, the value and what is allowed.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from reprlab.augment import AugmentConfig, SimCLRPolicy, StrongPolicy
from reprlab.methods import METHODS, MethodArgs, method_class
from reprlab.models.backbones import BACKBONES


class ConfigError(ValueError):
    """A job file or override that cannot be run; the message is one line."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EpisodeConfig(Strict):
    """Training episodes of a meta-learner: N-way K-shot Q-query tasks from `train_split`."""

    ways: int = Field(5, ge=2, description="classes per episode (N)")
    shots: int = Field(5, ge=1, description="support images per class (K)")
    queries: int = Field(15, ge=1, description="query images per class (Q)")
    tasks_per_step: int = Field(
        1, ge=1, description="meta-batch: tasks per optimiser step, split evenly across workers"
    )
    steps_per_epoch: int = Field(100, gt=0)
    rotate_classes: bool = Field(
        False,
        description="turn each training class by a random multiple of 90 degrees (a new class)",
    )


class DataConfig(Strict):
    dataset: str = "mnist5k"
    train_split: str = "train"
    eval_split: str = "test"
    image_size: int = Field(28, gt=0, le=1024)
    batch_size: int = Field(256, ge=2, description="global batch, split evenly across workers")
    augment: AugmentConfig = SimCLRPolicy()
    map_batch_size: int = Field(1024, gt=0, description="rows per Ray Data augmentation task")
    cache: bool = Field(True, description="keep shard rows in the object store across epochs")
    data_cpus: float = Field(1.0, gt=0, description="CPUs Ray Data may use beside the trainers")
    episodes: EpisodeConfig | None = Field(
        None, description="episodic training (meta-learners such as protonet, maml)"
    )
    labels_per_class: int | None = Field(
        None, ge=1, description="keep K labels per class of the train split, hide the rest"
    )
    label_fraction: float | None = Field(
        None, gt=0, le=1, description="keep this fraction of each class's labels, hide the rest"
    )
    unlabelled_ratio: int = Field(
        7, ge=1, description="unlabelled images per labelled one in a step (FixMatch's mu)"
    )
    strong_augment: AugmentConfig = Field(
        StrongPolicy(), description="the strong view of unlabelled images (FixMatch)"
    )
    m_per_class: int | None = Field(
        None, ge=2, description="images per class in a metric-learning batch (m); P = batch / m"
    )

    @model_validator(mode="after")
    def _one_way_to_subset(self) -> DataConfig:
        if self.labels_per_class is not None and self.label_fraction is not None:
            raise ValueError("labels_per_class: give labels_per_class or label_fraction, not both")
        return self

    @property
    def label_subset_asked(self) -> bool:
        """Whether the job keeps only some of the train split's labels."""
        return self.labels_per_class is not None or self.label_fraction is not None


class ModelConfig(Strict):
    backbone: Literal[
        "conv4", "resnet18", "resnet50", "wrn28_2", "vit_mini", "vit_tiny", "vit_small", "pixels"
    ] = "conv4"
    width: int | None = Field(None, gt=0, description="conv4 filters per layer (default 64)")
    patch_size: int = Field(4, gt=0, description="ViT patch side; must divide data.image_size")
    global_bn: bool = Field(False, description="batch-norm statistics over all workers' batches")
    init_from: str | None = Field(
        None,
        description="start from an earlier run's encoder: run name or folder, checkpoint "
        "folder, MLflow run id, or MLflow model URI (runs:/..., models:/NAME@ALIAS)",
    )
    teacher: str | None = Field(
        None,
        description="the finished run whose classifier a student learns from (noisy_student): "
        "run name or folder, checkpoint folder, or MLflow run id",
    )

    @model_validator(mode="after")
    def _width_only_where_taken(self) -> ModelConfig:
        if self.width is not None and not _takes_width(self.backbone):
            sized = ", ".join(name for name in BACKBONES if _takes_width(name))
            raise ValueError(
                f"width: only {sized} has a width; backbone {self.backbone!r} takes none "
                "(remove model.width)"
            )
        return self


def _takes_width(backbone: str) -> bool:
    """Whether the backbone's factory (models/backbones.py BACKBONES) has a `width` argument."""
    factory = BACKBONES.get(backbone)
    return factory is not None and "width" in inspect.signature(factory).parameters


class OptimConfig(Strict):
    optimizer: Literal["adamw", "sgd", "lars"] = "adamw"
    lr: float = Field(1e-3, gt=0, description="learning rate at the global batch size")
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    lars_eta: float = Field(0.02, gt=0, description="LARS trust coefficient")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas (MAE: 0.9, 0.95)")
    epochs: int = Field(10, gt=0)
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float | None = Field(None, gt=0)


class ScalingConfig(Strict):
    num_workers: int | tuple[int, int] = Field(
        2,
        description="Ray Train workers (0 runs in-process), or [min, max] to train elastically",
    )
    placement: Literal["pack", "spread"] = Field(
        "pack", description="pack workers onto few nodes, or spread them over the nodes"
    )
    max_failures: int = Field(
        0, ge=0, description="worker-group restarts from the last checkpoint after a failure"
    )
    use_gpu: bool = False
    cpus_per_worker: float = Field(0.5, gt=0)
    torch_threads: int = Field(1, gt=0, description="intra-op threads per CPU worker")

    @model_validator(mode="before")
    @classmethod
    def _count_or_elastic_range(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "num_workers" not in data:
            return data
        value = data["num_workers"]

        def count(item: Any) -> bool:
            return isinstance(item, int) and not isinstance(item, bool)

        if count(value) and value >= 0:
            return data
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(map(count, value)):
            if 1 <= value[0] <= value[1]:
                return data
        raise ValueError(
            "num_workers: must be a count >= 0, or an elastic range [min, max] with "
            f"1 <= min <= max, got {value!r}"
        )

    @property
    def worker_counts(self) -> range:
        """Every number of workers the run may train on (one number unless elastic)."""
        if isinstance(self.num_workers, tuple):
            return range(self.num_workers[0], self.num_workers[1] + 1)
        return range(self.num_workers, self.num_workers + 1)

    @property
    def max_workers(self) -> int:
        return self.worker_counts[-1]


STORAGE_VARIABLE = "REPRLAB_STORAGE_PATH"
"""A cluster's shared checkpoint root for every job (set on its nodes, e.g. from a Secret)."""
REMOTE_SCHEMES = ("s3", "gs")
"""Object stores Ray Train persists checkpoints to (through pyarrow's filesystems)."""


class StorageConfig(Strict):
    """Where checkpoints live. A run on a cluster of several nodes needs storage every node
    reaches: an object store (s3://, gs://) or a mounted path declared `shared`."""

    path: str | None = Field(
        None,
        description=f"checkpoint root: s3://bucket/prefix or a path [default: ${STORAGE_VARIABLE}"
        ", else the runs folder]",
    )
    shared: bool = Field(False, description="the local `path` is mounted on every node (NFS)")

    @model_validator(mode="before")
    @classmethod
    def _path_from_the_environment(cls, data: Any) -> Any:
        if isinstance(data, dict) and "path" not in data and os.environ.get(STORAGE_VARIABLE):
            return {**data, "path": os.environ[STORAGE_VARIABLE]}
        return data

    @model_validator(mode="after")
    def _path_is_a_uri_or_absolute(self) -> StorageConfig:
        path = self.path
        origin = f" (from ${STORAGE_VARIABLE})" if path == os.environ.get(STORAGE_VARIABLE) else ""
        if path is None:
            if self.shared:
                raise ValueError("shared: only a `storage.path` can be declared shared")
            return self
        if "://" in path:
            scheme = path.split("://", 1)[0]
            if scheme not in REMOTE_SCHEMES:
                allowed = ", ".join(f"{name}://" for name in REMOTE_SCHEMES)
                raise ValueError(f"path: allowed schemes: {allowed}, got {path!r}{origin}")
            if self.shared:
                raise ValueError(f"shared: {path} is an object store; remove it")
        elif not Path(path).is_absolute():
            raise ValueError(f"path: a local path must be absolute, got {path!r}{origin}")
        return self

    @property
    def is_shared(self) -> bool:
        """Whether every node of a cluster reaches this storage."""
        return self.path is not None and ("://" in self.path or self.shared)


class FewShotEvalConfig(Strict):
    """N-way K-shot evaluation on fixed, seeded episodes: `val_episodes` of data.eval_split
    every epoch, `episodes` of `split` after the last epoch, each with a 95 % interval."""

    ways: int = Field(5, ge=2)
    shots: list[int] = Field([1, 5], min_length=1, description="one evaluation per value")
    queries: int = Field(15, ge=1)
    split: str = Field("test", description="split of the final test episodes")
    episodes: int = Field(600, ge=2, description="fixed test episodes per shot setting")
    val_episodes: int = Field(100, ge=0, description="episodes each epoch on data.eval_split")
    seed: int = Field(0, description="seed of the fixed evaluation episodes")


class EvalConfig(Strict):
    linear_probe: bool = True
    knn: bool = True
    online_linear: bool = Field(
        True, description="train a linear head on detached features; report online_linear_acc"
    )
    online_linear_lr: float = Field(0.01, gt=0, description="peak LR of the online classifier")
    knn_every: int = Field(0, ge=0, description="kNN accuracy every N epochs in training; 0 off")
    knn_k: int = Field(20, gt=0)
    knn_temperature: float = Field(0.07, gt=0)
    retrieval: bool = Field(
        True, description="Precision@1, Recall@k, R-Precision and MAP@R of the frozen encoder"
    )
    retrieval_every: int = Field(
        0, ge=0, description="retrieval metrics every N epochs in training (all workers); 0 off"
    )
    clustering: bool = Field(
        True, description="k-means (k = classes) accuracy, NMI and ARI of the frozen encoder"
    )
    retrieval_split: str | None = Field(
        None, description="split retrieval and clustering score [default: data.eval_split]"
    )
    fewshot: FewShotEvalConfig | None = None


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
    storage: StorageConfig = Field(default_factory=dict, validate_default=True)  # reads the env
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
        self._split_across_workers("data.batch_size", self.data.batch_size)
        return self

    def _split_across_workers(self, key: str, value: int) -> None:
        for workers in self.scaling.worker_counts:
            if value % max(1, workers):
                counts = self.scaling.worker_counts
                which = f"{counts[0]}..{counts[-1]}" if len(counts) > 1 else f"{workers}"
                raise ValueError(
                    f"{key}: must be a multiple of scaling.num_workers ({which}), got {value}"
                )

    @model_validator(mode="after")
    def _backbone_fits(self) -> JobConfig:
        backbone = self.model.backbone
        if backbone.startswith("vit") and self.data.image_size % self.model.patch_size:
            raise ValueError(
                f"model.patch_size: must divide data.image_size ({self.data.image_size}), "
                f"got {self.model.patch_size}"
            )
        allowed = method_class(self.method).backbones
        if allowed is not None and backbone not in allowed:
            names = ", ".join(repr(name) for name in allowed)
            raise ValueError(
                f"model.backbone: method {self.method!r} needs one of {names}, got {backbone!r}"
            )
        return self

    @model_validator(mode="after")
    def _label_subset_is_used(self) -> JobConfig:
        if self.data.label_subset_asked and not method_class(self.method).classifies:
            key = "labels_per_class" if self.data.labels_per_class else "label_fraction"
            takers = ", ".join(name for name, cls in METHODS.items() if cls.classifies)
            raise ValueError(
                f"data.{key}: method {self.method!r} trains on no labels, so it takes no label "
                f"subset; methods that do: {takers}"
            )
        return self

    @model_validator(mode="after")
    def _m_per_class_fits(self) -> JobConfig:
        m = self.data.m_per_class
        takes_it = method_class(self.method).batch_source == "m_per_class"
        if takes_it and m is None:
            raise ValueError(
                f"data.m_per_class: method {self.method!r} trains on m-per-class batches; set "
                "the images per class (e.g. 4, with data.batch_size a multiple of it)"
            )
        if not takes_it and m is not None:
            raise ValueError(
                f"data.m_per_class: method {self.method!r} does not train on m-per-class "
                "batches; remove it"
            )
        if m is not None:
            if self.data.batch_size % m:
                raise ValueError(
                    f"data.m_per_class: must divide data.batch_size ({self.data.batch_size}), "
                    f"got {m}"
                )
            self._split_across_workers(
                "data.batch_size / data.m_per_class", self.data.batch_size // m
            )
        return self

    @model_validator(mode="after")
    def _teacher_only_for_students(self) -> JobConfig:
        if self.model.teacher is not None and not method_class(self.method).learns_from_teacher:
            students = ", ".join(n for n, cls in METHODS.items() if cls.learns_from_teacher)
            raise ValueError(
                f"model.teacher: method {self.method!r} learns from no teacher (methods that "
                f"do: {students}); remove it"
            )
        return self

    @model_validator(mode="after")
    def _mixer_is_used(self) -> JobConfig:
        mixer = self.data.augment.mixer
        if mixer != "none" and not method_class(self.method).uses_mixed_labels:
            raise ValueError(
                f"data.augment.mixer: method {self.method!r} does not train on mixed labels "
                f"(supervised does); allowed: 'none', got {mixer!r}"
            )
        return self

    @model_validator(mode="after")
    def _episodes_match_method(self) -> JobConfig:
        episodic = method_class(self.method).batch_source == "episodes"
        episodes = self.data.episodes
        if episodic and episodes is None:
            raise ValueError(
                f"data.episodes: method {self.method!r} trains on episodes; set data.episodes "
                "(ways, shots, queries, tasks_per_step, steps_per_epoch)"
            )
        if not episodic and episodes is not None:
            raise ValueError(
                f"data.episodes: method {self.method!r} trains on views, not episodes; remove it"
            )
        if not episodic:
            return self
        for key in ("online_linear", "knn_every"):
            if getattr(self.eval, key):
                raise ValueError(
                    f"eval.{key}: method {self.method!r} trains on episodes without per-image "
                    "labels; must be off (use eval.fewshot)"
                )
        if self.model.global_bn and not method_class(self.method).ddp:
            raise ValueError(
                f"model.global_bn: method {self.method!r} normalises each task by its own batch "
                "statistics; must be false"
            )
        self._split_across_workers("data.episodes.tasks_per_step", episodes.tasks_per_step)
        head_ways = getattr(self.parsed_method_args(), "ways", None)
        fewshot = self.eval.fewshot
        for key, ways in (
            ("data.episodes.ways", episodes.ways),
            ("eval.fewshot.ways", fewshot.ways if fewshot else None),
        ):
            if head_ways is not None and ways is not None and ways != head_ways:
                raise ValueError(
                    f"{key}: method {self.method!r} has a {head_ways}-way head "
                    f"(method_args.ways); must be {head_ways}, got {ways}"
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
    """One pydantic error as `dotted.key: what is allowed, got VALUE`; the tag pydantic puts in
    the location of a discriminated union's member (which policy failed) is left out."""
    location, _ = _resolve(model, error["loc"])
    key = ".".join(([prefix] if prefix else []) + location) or "<job>"
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, error["loc"][:-1])
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return message if not location else f"{key}.{message}"
    if kind in _MESSAGES:
        message = _MESSAGES[kind].format(**ctx)
    return f"{key}: {message}, got {error.get('input')!r}"


def _allowed_keys(model: type[BaseModel], path: tuple | list) -> list[str]:
    return sorted(getattr(_resolve(model, path)[1], "model_fields", {}))


def _resolve(model: type[BaseModel], location: tuple | list) -> tuple[list[str], Any]:
    """The keys of a pydantic error location without union tags, and the type it leads to."""
    keys: list[str] = []
    current: Any = model
    for part in location:
        members = _tagged_members(current)
        if part in members:
            current = members[part]
            continue
        keys.append(str(part))
        field = getattr(current, "model_fields", {}).get(part)
        current = field.annotation if field is not None else None
    return keys, current


def _tagged_members(annotation: Any) -> dict[str, Any]:
    """tag -> model for a union of `Annotated[Model, Tag(tag)]` members; empty otherwise."""
    members = {}
    for member in get_args(annotation):
        if get_origin(member) is Annotated:
            target, *metadata = get_args(member)
            members.update({item.tag: target for item in metadata if isinstance(item, Tag)})
    return members


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
    try:
        set_dotted(raw, key.strip(), yaml.safe_load(text) if text.strip() else None)
    except ConfigError as error:
        raise ConfigError(f"override '{assignment}': {error}") from None


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set `dotted.key` of a raw job dict in place, making missing sections; a numeric segment
    indexes a list the dict already holds (`data.augment.crop_scale.0`)."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError("empty key segment")
    node: Any = raw
    for depth, part in enumerate(parts):
        where, last = ".".join(parts[:depth]), depth + 1 == len(parts)
        if isinstance(node, list):
            slot: str | int = _list_index(node, part, where)
        elif isinstance(node, dict):
            slot = part
            if not last and part not in node:
                if parts[depth + 1].isdigit():
                    whole = ".".join(parts[: depth + 1])
                    raise ConfigError(
                        f"{key}: indexes a list the job file does not set; set {whole} whole"
                    )
                node[part] = {}
        else:
            kind = "list" if part.isdigit() else "section"
            raise ConfigError(f"{where} is a value, not a {kind}")
        if last:
            node[slot] = value
        else:
            node = node[slot]


def _list_index(items: list, part: str, where: str) -> int:
    """The position in `items` a key segment names, or ConfigError naming the list's length."""
    size = len(items)
    if not part.isdigit() or int(part) >= size:
        raise ConfigError(
            f"{where}.{part}: {where} is a list of {size} values; index it 0..{size - 1}"
        )
    return int(part)


def read_yaml(path: Path, kind: str) -> Any:
    """The YAML in `path` (None when empty); ConfigError naming the file, and the line of a
    syntax error, when it is missing or not YAML. `kind` names the file in the message."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {kind} file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{path}:{where} not valid YAML ({getattr(error, 'problem', error)})"
        ) from None


def load_job(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobConfig:
    """Read a job YAML, apply overrides, validate. Every failure is one-line ConfigError."""
    path = Path(path)
    raw = read_yaml(path, "job") or {}
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
