"""Search spaces: `tune_spaces/*.yaml` files mapping dotted job keys to Ray Tune domains.

A space is validated against the job it will sweep before Ray starts: every key must be one
the job has (a numeric segment indexes a list, `data.augment.crop_scale.0`), and every bound or
value must make a job that the job's own models accept. Each failure is one line naming the
space file and the key.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ray import tune

from reprlab.config import (
    ConfigError,
    JobConfig,
    flatten,
    read_yaml,
    set_dotted,
    validate_job,
)

Kind = Literal["loguniform", "uniform", "quniform", "randint", "choice", "grid"]
NEEDS: dict[str, str] = {
    "loguniform": "[lo, hi] with 0 < lo < hi",
    "uniform": "[lo, hi] with lo < hi",
    "quniform": "[lo, hi, q] with lo < hi and q > 0",
    "randint": "[lo, hi] of integers with lo < hi (hi excluded)",
    "choice": "a non-empty list of values",
    "grid": "a non-empty list of values",
}
"""Each domain kind and the arguments it takes, as its error messages state them."""
TOP_LEVEL = ("description", "metric", "mode", "scheduler", "pbt", "params")
MODES = ("max", "min")
SCHEDULERS = ("fifo", "asha", "pbt")
SEARCHES = ("random", "grid", "optuna")
LISTED = ("choice", "grid")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _args_fit(kind: str, args: tuple) -> bool:
    """Whether `args` are arguments `kind` takes (NEEDS)."""
    if kind in LISTED:
        return len(args) > 0
    if len(args) != (3 if kind == "quniform" else 2) or not all(map(_is_number, args)):
        return False
    if kind == "randint" and not all(map(_is_whole, args)):
        return False
    low, high = args[:2]
    return low < high and (kind != "loguniform" or low > 0) and (kind != "quniform" or args[2] > 0)


@dataclass(frozen=True)
class Domain:
    """One searched job key: how Tune draws its value (`kind`) and from what (`args`)."""

    key: str
    kind: Kind
    args: tuple

    def __post_init__(self) -> None:
        if self.kind not in NEEDS:
            raise ConfigError(
                f"{self.key}: unknown domain {self.kind!r}; allowed: {', '.join(NEEDS)}"
            )
        if not _args_fit(self.kind, self.args):
            raise ConfigError(
                f"{self.key}: {self.kind} needs {NEEDS[self.kind]}, got {list(self.args)}"
            )

    @property
    def is_grid(self) -> bool:
        """Whether Tune runs every value (grid) rather than drawing one per trial."""
        return self.kind == "grid"

    def to_tune(self) -> Any:
        """The Ray Tune domain: `tune.<kind>(...)`, or `tune.grid_search(values)` for grid."""
        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        if self.kind == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.kind)(*self.args)

    def describe(self) -> str:
        """The domain as a space file writes it, e.g. `loguniform [0.05, 1.0]`."""
        return f"{self.kind} {list(self.args)}"

    def edge_values(self) -> list:
        """The values that must each make a valid job: both bounds of a range (randint's upper
        bound is excluded, so hi - 1), every value of a choice or grid."""
        if self.kind in LISTED:
            return list(self.args)
        low, high = self.args[:2]
        return [low, high - 1] if self.kind == "randint" else [low, high]


@dataclass(frozen=True)
class PBTSettings:
    """Population Based Training's exploit/explore settings (Ray's PopulationBasedTraining)."""

    perturbation_interval: int = 2
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    # synchronous PBT ranks the whole population at the same epoch; asynchronous PBT ranks a
    # trial's fresh score against the others' older ones, so with few trials it rarely exploits
    synch: bool = False

    def __post_init__(self) -> None:
        interval, quantile = self.perturbation_interval, self.quantile_fraction
        resample = self.resample_probability
        checks = (
            ("perturbation_interval", _is_whole(interval) and interval >= 1, "an int >= 1"),
            ("quantile_fraction", _is_number(quantile) and 0 <= quantile <= 0.5, "in [0, 0.5]"),
            ("resample_probability", _is_number(resample) and 0 <= resample <= 1, "in [0, 1]"),
            ("synch", isinstance(self.synch, bool), "true or false"),
        )
        for key, fits, allowed in checks:
            if not fits:
                raise ConfigError(f"pbt.{key}: must be {allowed}, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class SearchSpace:
    """A validated space file: what to search, and the sweep defaults it suggests."""

    path: Path
    name: str
    description: str
    domains: tuple[Domain, ...]
    metric: str | None = None
    mode: str | None = None
    scheduler: str | None = None
    pbt: PBTSettings = field(default_factory=PBTSettings)

    @property
    def keys(self) -> tuple[str, ...]:
        """The searched dotted job keys, in file order."""
        return tuple(domain.key for domain in self.domains)

    def param_space(self, search: str) -> dict[str, Any]:
        """`{dotted key: Tune domain}` for `Tuner(param_space=...)` under a search algorithm:
        grid runs every choice (continuous domains refused), optuna samples (grid refused)."""
        if search not in SEARCHES:
            allowed = ", ".join(repr(name) for name in SEARCHES)
            raise ConfigError(f"--search: must be one of {allowed}, got {search!r}")
        if search == "grid":
            self._refuse(lambda d: d.kind not in LISTED, "needs choice or grid values", search)
            return {domain.key: tune.grid_search(list(domain.args)) for domain in self.domains}
        if search == "optuna":
            self._refuse(
                lambda d: d.is_grid,
                "samples every key, so grid values are refused (use choice)",
                search,
            )
        return {domain.key: domain.to_tune() for domain in self.domains}

    def _refuse(self, refused: Callable[[Domain], bool], reason: str, search: str) -> None:
        for domain in self.domains:
            if refused(domain):
                raise ConfigError(
                    f"{self.path}: --search {search} {reason}; {domain.key} is {domain.describe()}"
                )

    def trial_count(self, samples: int, search: str) -> int:
        """Trials Tune will run: `samples` times the grid (every grid-searched combination)."""
        gridded = [
            domain
            for domain in self.domains
            if domain.is_grid or (search == "grid" and domain.kind == "choice")
        ]
        return samples * math.prod(len(domain.args) for domain in gridded)

    def mutations(self) -> dict[str, Any]:
        """PBT's `hyperparam_mutations`: a list for choice, grid and randint (explore shifts to a
        neighbouring value), the Tune domain for a range (explore scales it by 0.8 or 1.2)."""
        mutations: dict[str, Any] = {}
        for domain in self.domains:
            if domain.kind in LISTED:
                mutations[domain.key] = list(domain.args)
            elif domain.kind == "randint":
                mutations[domain.key] = list(range(*domain.args))
            else:
                mutations[domain.key] = domain.to_tune()
        return mutations

    def clamp(self, config: dict[str, Any]) -> dict[str, Any]:
        """`config` with each ranged value put back inside its bounds (and on quniform's step):
        PBT's explore scales by 0.8 or 1.2 without bounds; pass this as `custom_explore_fn`."""
        clamped = dict(config)
        for domain in self.domains:
            if domain.key not in clamped or domain.kind in LISTED + ("randint",):
                continue
            value, (low, high) = clamped[domain.key], domain.args[:2]
            if domain.kind == "quniform":
                value = round(value / domain.args[2]) * domain.args[2]
            clamped[domain.key] = min(max(value, low), high)
        return clamped


def _plain(value: Any) -> Any:
    """A Python number for a numpy scalar (Tune may hand np.float64), anything else as is."""
    return value.item() if isinstance(value, np.generic) else value


def _trial_source(job: JobConfig) -> str:
    return f"job {job.name!r}"


def trial_job(job: JobConfig, values: Mapping[str, Any]) -> JobConfig:
    """`job` with each dotted key set to its trial value, validated by the models that validate
    `key=value` overrides; ConfigError naming the key when a value does not fit."""
    raw = job.model_dump(mode="json")
    source = _trial_source(job)
    for key, value in values.items():
        try:
            set_dotted(raw, key, _plain(value))
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
    return validate_job(raw, source)


def _read(path: Path) -> dict:
    raw = read_yaml(path, "space")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a space file must be a mapping of keys, got {raw!r}")
    return raw


def _check_key(key: str, flat: dict[str, Any], job: JobConfig) -> None:
    """ConfigError unless `key` is a leaf of the job or indexes one of its list leaves."""
    if key in flat:
        return
    parent, _, last = key.rpartition(".")
    if last.isdigit() and isinstance(flat.get(parent), list):
        size = len(flat[parent])
        if int(last) < size:
            return
        raise ConfigError(f"{key}: {parent} has {size} values; index it 0..{size - 1}")
    close = difflib.get_close_matches(key, flat, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"{key}: job {job.name!r} has no such key{hint}")


def _domain(key: Any, spec: Any, flat: dict[str, Any], job: JobConfig) -> Domain:
    """The Domain of one `params` entry, its key checked against the job's keys."""
    if not isinstance(key, str):
        raise ConfigError(f"{key!r}: a param is a dotted job key, e.g. optim.lr")
    _check_key(key, flat, job)
    if not (isinstance(spec, dict) and len(spec) == 1):
        raise ConfigError(
            f"{key}: a domain is one kind mapped to its arguments, e.g. {{uniform: [0.1, 0.9]}}, "
            f"got {spec!r}"
        )
    [(kind, args)] = spec.items()
    if kind in NEEDS and not isinstance(args, list):
        raise ConfigError(f"{key}: {kind} needs {NEEDS[kind]}, got {args!r}")
    return Domain(key, kind, tuple(args) if isinstance(args, list) else (args,))


def _check_fits(domain: Domain, job: JobConfig) -> None:
    """ConfigError unless every edge value of `domain` makes a job the job's models accept."""
    what = "value" if domain.kind in LISTED else "bound"
    for value in domain.edge_values():
        try:
            trial_job(job, {domain.key: value})
        except ConfigError as error:
            reason = str(error).removeprefix(f"{_trial_source(job)}: ")
            raise ConfigError(
                f"{domain.key}: {domain.kind} {what} {value!r} does not fit the job: {reason}"
            ) from None


def _one_of(raw: dict, key: str, allowed: tuple[str, ...]) -> str | None:
    value = raw.get(key)
    if value is not None and value not in allowed:
        names = ", ".join(repr(name) for name in allowed)
        raise ConfigError(f"{key}: must be one of {names}, got {value!r}")
    return value


def _text(raw: dict, key: str, required: bool) -> str | None:
    value = raw.get(key)
    if (value is None and required) or (value is not None and not isinstance(value, str)):
        raise ConfigError(f"{key}: must be {'a' if required else 'absent or a'} string")
    return value


def _pbt(raw: Any) -> PBTSettings:
    allowed = [setting.name for setting in fields(PBTSettings)]
    if raw is None:
        return PBTSettings()
    if not isinstance(raw, dict):
        raise ConfigError(f"pbt: must be a mapping of {', '.join(allowed)}, got {raw!r}")
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"pbt.{key}: unknown key; allowed: {', '.join(allowed)}")
    return PBTSettings(**raw)


def load_space(path: str | Path, job: JobConfig) -> SearchSpace:
    """Read a space file and check it against `job`: its keys, its domains' arguments, and
    that each bound or value makes a valid job. Every failure is a one-line ConfigError."""
    path = Path(path)
    raw = _read(path)
    try:
        for key in raw:
            if key not in TOP_LEVEL:
                raise ConfigError(f"{key}: unknown key; allowed: {', '.join(TOP_LEVEL)}")
        params = raw.get("params")
        if not isinstance(params, dict) or not params:
            raise ConfigError("params: must map at least one dotted job key to a domain")
        flat = flatten(job)
        domains = tuple(_domain(key, spec, flat, job) for key, spec in params.items())
        for domain in domains:
            _check_fits(domain, job)
        return SearchSpace(
            path=path,
            name=path.stem,
            description=_text(raw, "description", required=True),
            domains=domains,
            metric=_text(raw, "metric", required=False),
            mode=_one_of(raw, "mode", MODES),
            scheduler=_one_of(raw, "scheduler", SCHEDULERS),
            pbt=_pbt(raw.get("pbt")),
        )
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
