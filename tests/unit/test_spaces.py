"""Search spaces: the shipped space files against their jobs, the Tune domains they make, trial
counts, PBT mutations, trial jobs, and one-line errors naming the space file and the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ray import tune

from reprlab.config import ConfigError, load_job, to_yaml
from reprlab.tune.spaces import Domain, PBTSettings, load_space, trial_job

ROOT = Path(__file__).parents[2]
SPACES = ROOT / "tune_spaces"
QUICKSTART = load_job(ROOT / "jobs" / "quickstart.yaml")

SHIPPED = [
    ("simclr_temperature", "quickstart"),
    ("simclr_temperature_grid", "quickstart"),
    ("augment_policy", "quickstart"),
    ("augment_policy_pbt", "quickstart"),
    ("mae_mask_ratio", "mae_mnist5k"),
    ("mae_mask_ratio_grid", "mae_mnist5k"),
    ("maml_inner", "maml_glyphs"),
    ("maml_inner", "anil_glyphs"),
    ("byol_momentum", "byol_mnist5k"),
    ("seeds", "quickstart"),
]


def _space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _params(tmp_path: Path, *lines: str) -> Path:
    body = "".join(f"  {line}\n" for line in lines)
    return _space(tmp_path, f"description: a test space\nparams:\n{body}")


def test_every_shipped_space_is_paired_with_a_job() -> None:
    assert {path.stem for path in SPACES.glob("*.yaml")} == {space for space, _ in SHIPPED}


@pytest.mark.parametrize("space_name,job_name", SHIPPED, ids="-".join)
def test_shipped_space_loads_against_its_job(space_name: str, job_name: str) -> None:
    job = load_job(ROOT / "jobs" / f"{job_name}.yaml")
    space = load_space(SPACES / f"{space_name}.yaml", job)
    assert space.name == space_name and space.description.strip()
    assert space.mode == "max" and space.metric
    assert space.param_space("random").keys() == set(space.keys)
    assert space.trial_count(4, "random") == 4 * space.trial_count(1, "random")
    lowest = trial_job(job, {d.key: d.edge_values()[0] for d in space.domains})
    highest = trial_job(job, {d.key: d.edge_values()[-1] for d in space.domains})
    assert lowest != highest


def test_maml_space_reports_a_metric_the_job_evaluates() -> None:
    job = load_job(ROOT / "jobs" / "maml_glyphs.yaml")
    space = load_space(SPACES / "maml_inner.yaml", job)
    fewshot = job.eval.fewshot
    assert fewshot is not None and fewshot.val_episodes > 0
    assert space.metric == f"fewshot/val_{fewshot.ways}way_{fewshot.shots[0]}shot_acc"


def test_random_param_space_samples_within_the_bounds_on_a_log_scale() -> None:
    space = load_space(SPACES / "simclr_temperature.yaml", QUICKSTART)
    domain = space.param_space("random")["method_args.temperature"]
    assert isinstance(domain, tune.search.sample.Float)
    values = np.asarray(domain.sample(size=4000, random_state=0))
    assert values.min() >= 0.05 and values.max() <= 1.0
    # log-uniform: the median is the geometric mean of the bounds, not their mean
    assert np.median(values) == pytest.approx(np.sqrt(0.05 * 1.0), rel=0.1)


def test_randint_excludes_its_upper_bound_and_checks_hi_minus_one(tmp_path: Path) -> None:
    space = load_space(SPACES / "augment_policy.yaml", QUICKSTART)
    num_ops = space.param_space("random")["data.augment.num_ops"]
    assert isinstance(num_ops, tune.search.sample.Integer)
    assert set(num_ops.sample(size=400, random_state=0).tolist()) == {0, 1, 2, 3}
    assert load_space(_params(tmp_path, "data.augment.num_ops: {randint: [0, 11]}"), QUICKSTART)
    with pytest.raises(ConfigError, match=r"randint bound 11 does not fit the job: .*<= 10"):
        load_space(_params(tmp_path, "data.augment.num_ops: {randint: [0, 12]}"), QUICKSTART)


def test_grid_choice_and_quniform_domains(tmp_path: Path) -> None:
    path = _params(
        tmp_path,
        "model.width: {choice: [16, 32, 64]}",
        "optim.lr: {grid: [0.001, 0.002]}",
        "data.augment.blur_p: {quniform: [0.1, 0.9, 0.05]}",
    )
    space = load_space(path, QUICKSTART)
    random = space.param_space("random")
    assert random["optim.lr"] == {"grid_search": [0.001, 0.002]}
    assert isinstance(random["model.width"], tune.search.sample.Categorical)
    blur = np.asarray(random["data.augment.blur_p"].sample(size=500, random_state=0))
    assert blur.min() >= 0.1 and blur.max() <= 0.9
    assert np.allclose(blur / 0.05, np.round(blur / 0.05))
    assert space.trial_count(3, "random") == 3 * 2
    with pytest.raises(ConfigError) as error:
        space.param_space("grid")
    assert str(error.value) == (
        f"{path}: --search grid needs choice or grid values; "
        "data.augment.blur_p is quniform [0.1, 0.9, 0.05]"
    )
    with pytest.raises(ConfigError, match=r"optuna .*use choice\); optim.lr is grid \[0.001"):
        space.param_space("optuna")
    with pytest.raises(ConfigError, match="--search: must be one of 'random', 'grid', 'optuna'"):
        space.param_space("bayes")


def test_grid_search_grids_every_choice_and_samples_repeat_the_grid(tmp_path: Path) -> None:
    path = _params(tmp_path, "model.width: {choice: [16, 32, 64]}", "optim.lr: {grid: [1, 2]}")
    space = load_space(path, QUICKSTART)
    assert space.param_space("grid") == {
        "model.width": {"grid_search": [16, 32, 64]},
        "optim.lr": {"grid_search": [1, 2]},
    }
    assert space.trial_count(1, "grid") == 6
    assert space.trial_count(2, "grid") == 12
    assert space.trial_count(5, "random") == 10  # choice is sampled, grid runs every value


def test_pbt_space_settings_mutations_and_clamp() -> None:
    space = load_space(SPACES / "augment_policy_pbt.yaml", QUICKSTART)
    assert space.scheduler == "pbt"
    assert space.pbt == PBTSettings(2, 0.25, 0.25, synch=True)
    mutations = space.mutations()
    assert mutations["data.augment.num_ops"] == [0, 1, 2, 3]
    assert mutations["data.augment.magnitude"] == list(range(1, 16))
    strength = mutations["data.augment.strength"]
    assert isinstance(strength, tune.search.sample.Float) and strength.upper == 1.0
    # PBT scales a range by 1.2 without bounds: clamp puts it back inside, else the trial fails
    explored = {"data.augment.crop_scale.0": 0.6 * 1.2, "data.augment.blur_p": -0.1, "seed": 3}
    clamped = space.clamp(explored)
    assert clamped == {"data.augment.crop_scale.0": 0.6, "data.augment.blur_p": 0.0, "seed": 3}
    trial_job(QUICKSTART, {k: v for k, v in clamped.items() if k in space.keys})


def test_grid_values_mutate_as_a_list_and_quniform_clamps_onto_its_step(tmp_path: Path) -> None:
    path = _params(
        tmp_path, "optim.lr: {grid: [0.001, 0.002]}", "optim.momentum: {quniform: [0.5, 0.9, 0.1]}"
    )
    space = load_space(path, QUICKSTART)
    assert space.mutations()["optim.lr"] == [0.001, 0.002]
    assert space.clamp({"optim.momentum": 0.74})["optim.momentum"] == pytest.approx(0.7)
    assert space.clamp({"optim.momentum": 1.08})["optim.momentum"] == pytest.approx(0.9)


def test_trial_job_sets_values_including_a_list_item_and_numpy_scalars() -> None:
    values = {
        "data.augment.crop_scale.0": np.float64(0.2),
        "method_args.temperature": np.float64(0.07),
        "data.augment.num_ops": np.int64(2),
    }
    job = trial_job(QUICKSTART, values)
    assert job.data.augment.crop_scale == (0.2, 1.0)
    assert job.data.augment.num_ops == 2 and type(job.data.augment.num_ops) is int
    # method_args is a plain dict in the job: a numpy scalar would stay one there
    temperature = job.method_args["temperature"]
    assert temperature == 0.07 and type(temperature) is float
    assert "temperature: 0.07" in to_yaml(job)
    assert job.method_args["proj_dim"] == 128  # the rest of the job is kept
    assert QUICKSTART.data.augment.crop_scale == (0.3, 1.0)  # the job itself is untouched


@pytest.mark.parametrize(
    "values,expected",
    [
        ({"method_args.temperature": -1.0}, "method_args.temperature: must be > 0.0, got -1.0"),
        ({"data.augment.crop_scale.0": 1.5}, "data.augment.crop_scale: must be 0 < low <= high"),
        ({"data.augment.crop_scale.2": 0.5}, "crop_scale is a list of 2 values; index it 0..1"),
    ],
)
def test_trial_job_refuses_a_value_naming_the_key(values: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        trial_job(QUICKSTART, values)
    assert str(error.value).startswith("job 'quickstart': ")
    assert expected in str(error.value)


def test_domain_edges_and_description() -> None:
    assert Domain("a", "loguniform", (0.05, 1.0)).describe() == "loguniform [0.05, 1.0]"
    assert Domain("a", "grid", (0.001, 0.002)).describe() == "grid [0.001, 0.002]"
    assert Domain("a", "randint", (1, 6)).edge_values() == [1, 5]
    assert Domain("a", "quniform", (0.1, 0.9, 0.05)).edge_values() == [0.1, 0.9]
    assert Domain("a", "choice", ("x", "y", "z")).edge_values() == ["x", "y", "z"]
    assert Domain("a", "grid", (1, 2)).is_grid and not Domain("a", "choice", (1, 2)).is_grid
    with pytest.raises(ConfigError, match="a: uniform needs"):
        Domain("a", "uniform", (1.0, 1.0))


@pytest.mark.parametrize(
    "params,expected",
    [
        (
            "method_args.temprature: {uniform: [0.1, 0.5]}",
            "method_args.temprature: job 'quickstart' has no such key; "
            "did you mean method_args.temperature",
        ),
        ("data.augment.crop_scale.5: {uniform: [0.1, 0.5]}", "crop_scale has 2 values; index"),
        (
            "method_args.temperature: {loguniform: [0.0, 1]}",
            "method_args.temperature: loguniform needs [lo, hi] with 0 < lo < hi, got [0.0, 1]",
        ),
        (
            "method_args.temperature: {uniform: [-0.5, 1.0]}",
            "method_args.temperature: uniform bound -0.5 does not fit the job: "
            "method_args.temperature: must be > 0.0, got -0.5",
        ),
        (
            "model.backbone: {choice: [conv4, resnet999]}",
            "model.backbone: choice value 'resnet999' does not fit the job: "
            "model.backbone: must be one of 'conv4'",
        ),
        (
            "data.augment.crop_scale.0: {uniform: [0.5, 1.2]}",
            "uniform bound 1.2 does not fit the job: data.augment.crop_scale: must be 0 < low",
        ),
        ("method_args.temperature: {normal: [0, 1]}", "temperature: unknown domain 'normal'"),
        ("method_args.temperature: 0.5", "temperature: a domain is one kind mapped to its"),
        ("method_args.temperature: {uniform: 0.5}", "uniform needs [lo, hi] with lo < hi, got 0.5"),
        ("data.augment.num_ops: {randint: [0.5, 3]}", "randint needs [lo, hi] of integers"),
        ("optim.lr: {quniform: [0.1, 0.5, 0]}", "optim.lr: quniform needs [lo, hi, q]"),
        ("model.width: {choice: []}", "model.width: choice needs a non-empty list"),
    ],
)
def test_bad_params_fail_with_one_line_naming_file_and_key(
    tmp_path: Path, params: str, expected: str
) -> None:
    path = _params(tmp_path, params)
    with pytest.raises(ConfigError) as error:
        load_space(path, QUICKSTART)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


GOOD = "params:\n  optim.lr: {uniform: [0.001, 0.01]}\n"


@pytest.mark.parametrize(
    "text,expected",
    [
        (f"description: x\nmetrics: acc\n{GOOD}", "metrics: unknown key; allowed: description"),
        (GOOD, "description: must be a string"),
        ("description: x\nparams: {}\n", "params: must map at least one dotted job key"),
        (f"description: x\nmode: best\n{GOOD}", "mode: must be one of 'max', 'min', got 'best'"),
        (f"description: x\nscheduler: hyperband\n{GOOD}", "scheduler: must be one of 'fifo'"),
        (f"description: x\npbt: {{quantile_fraction: 0.9}}\n{GOOD}", "pbt.quantile_fraction"),
        (f"description: x\npbt: {{synch: yes please}}\n{GOOD}", "pbt.synch: must be true or false"),
        (f"description: x\npbt: {{interval: 2}}\n{GOOD}", "pbt.interval: unknown key; allowed"),
        ("description: x\nparams: [\n", "line 3 not valid YAML"),
        ("- a\n- b\n", "a space file must be a mapping of keys"),
    ],
)
def test_bad_space_files_fail_with_one_line_naming_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _space(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_space(path, QUICKSTART)
    assert str(error.value).startswith(f"{path}:")
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_space_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml: no such space file"):
        load_space(tmp_path / "missing.yaml", QUICKSTART)
