"""Job files: defaults, overrides, and one-line errors that name the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reprlab.config import (
    ConfigError,
    JobConfig,
    flatten,
    load_job,
    set_dotted,
    to_yaml,
    validate_job,
)
from reprlab.pipeline.spec import load_pipeline

QUICKSTART = Path(__file__).parents[2] / "jobs" / "quickstart.yaml"


def _job(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_quickstart_loads_and_overrides_apply() -> None:
    job = load_job(QUICKSTART, ["optim.epochs=3", "method_args.temperature=0.1", "seed=5"])
    assert job.optim.epochs == 3 and job.seed == 5
    assert job.parsed_method_args().temperature == 0.1
    assert job.data.augment.hflip_p == 0.0


@pytest.mark.parametrize(
    "override,expected",
    [
        ("optim.lr=-1", "optim.lr: must be > 0.0, got -1"),
        ("optim.foo=1", "optim.foo: unknown key; allowed: betas, epochs, grad_clip, lars_eta, lr"),
        ("model.backbone=vit", "model.backbone: must be one of 'conv4', 'resnet18', 'resnet50',"),
        ("method=nope", "method: must be one of 'anil', 'arcface', 'autoencoder', 'barlow_twins'"),
        ("method_args.temperature=0", "method_args.temperature: must be > 0.0, got 0"),
        (
            "data.augment.mixer=cutmix",
            "data.augment.mixer: method 'simclr' does not train on mixed labels",
        ),
        ("method_args.tau=1", "method_args.tau: unknown key; allowed: proj_dim"),
        ("data.augment.crop_scale=[0.9,0.1]", "data.augment.crop_scale: must be 0 < low <= high"),
        ("scaling.num_workers=two", "scaling.num_workers: must be a count >= 0, or an elastic"),
        ("scaling.num_workers=[2,1]", "with 1 <= min <= max, got [2, 1]"),
        (
            "scaling.num_workers=[1,3]",
            "data.batch_size: must be a multiple of scaling.num_workers (1..3)",
        ),
        ("scaling.placement=wide", "scaling.placement: must be one of 'pack' or 'spread'"),
        ("scaling.max_failures=-1", "scaling.max_failures: must be >= 0"),
        ("storage.path=runs/here", "storage.path: a local path must be absolute, got 'runs/here'"),
        ("storage.path=ftp://host/runs", "storage.path: allowed schemes: s3://, gs://"),
        ("storage.shared=true", "storage.shared: only a `storage.path` can be declared shared"),
        ("data.augment.hflip_p=2", "data.augment.hflip_p: must be <= 1.0, got 2"),
        ("data.batch_size=255", "data.batch_size: must be a multiple of scaling.num_workers (2)"),
    ],
)
def test_bad_values_fail_with_one_line_naming_file_and_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_job(QUICKSTART, [override])
    message = str(error.value)
    assert message.startswith(f"{QUICKSTART}: ")
    assert expected in message
    assert "\n" not in message


def test_unknown_top_level_key_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"epochs: unknown key; allowed: data, eval"):
        load_job(_job(tmp_path, "epochs: 3\n"))
    with pytest.raises(ConfigError, match=r"line 2 not valid YAML"):
        load_job(_job(tmp_path, "name: x\n  bad: [\n"))
    with pytest.raises(ConfigError, match="no such job file"):
        load_job(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_job(_job(tmp_path, "- a\n- b\n"))


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        load_job(QUICKSTART, ["optim.epochs"])
    with pytest.raises(ConfigError, match="name is a value, not a section"):
        load_job(QUICKSTART, ["name.x=1"])


def test_a_numeric_segment_indexes_a_list(tmp_path: Path) -> None:
    job = load_job(QUICKSTART, ["data.augment.crop_scale.0=0.2", "data.augment.crop_scale.1=0.9"])
    assert job.data.augment.crop_scale == (0.2, 0.9)
    betas = _job(tmp_path, "optim:\n  betas: [0.9, 0.999]\n")
    assert load_job(betas, ["optim.betas.1=0.95"]).optim.betas == (0.9, 0.95)
    raw = {"a": {"items": [1, 2]}}
    set_dotted(raw, "a.items.1", 5)
    assert raw == {"a": {"items": [1, 5]}}


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            "data.augment.crop_scale.2=0.5",
            "data.augment.crop_scale.2: data.augment.crop_scale is a list of 2 values; "
            "index it 0..1",
        ),
        ("data.augment.crop_scale.first=0.5", "crop_scale is a list of 2 values; index it 0..1"),
        ("optim.lr.0=1", "optim.lr is a value, not a list"),
        ("optim.betas.0=0.8", "optim.betas.0: indexes a list the job file does not set; set optim"),
        ("optim..lr=1", "empty key segment"),
    ],
)
def test_a_bad_list_index_fails_with_one_line(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_job(QUICKSTART, [override])
    message = str(error.value)
    assert message.startswith(f"override '{override}': ")
    assert expected in message and "\n" not in message


def test_resolved_config_round_trips_through_yaml_and_flattens() -> None:
    job = load_job(QUICKSTART)
    assert validate_job(yaml.safe_load(to_yaml(job))) == job
    flat = flatten(job)
    assert flat["optim.lr"] == job.optim.lr
    assert flat["method_args.proj_dim"] == 128
    assert flat["data.augment.crop_scale"] == [0.3, 1.0]


def test_defaults_are_a_valid_job() -> None:
    assert JobConfig().method == "simclr"


SHIPPED = sorted(QUICKSTART.parent.rglob("*.yaml"))
PIPELINE_FILES = [path for path in SHIPPED if "stages" in (yaml.safe_load(path.read_text()) or {})]
JOB_FILES = [path for path in SHIPPED if path not in PIPELINE_FILES]


@pytest.mark.parametrize("job_file", JOB_FILES, ids=lambda p: p.name)
def test_every_shipped_job_file_is_valid(job_file: Path) -> None:
    assert load_job(job_file).name == job_file.stem


@pytest.mark.parametrize("pipeline_file", PIPELINE_FILES, ids=lambda p: p.name)
def test_every_shipped_pipeline_file_is_valid_with_its_stages_jobs(pipeline_file: Path) -> None:
    assert load_pipeline(pipeline_file).name == pipeline_file.stem


MAML_JOB = Path(__file__).parents[2] / "jobs" / "maml_glyphs.yaml"


@pytest.mark.parametrize(
    "job_file,override,expected",
    [
        (MAML_JOB, "data.episodes=null", "data.episodes: method 'maml' trains on episodes"),
        (QUICKSTART, "data.episodes.ways=5", "data.episodes: method 'simclr' trains on views"),
        (MAML_JOB, "eval.online_linear=true", "eval.online_linear: method 'maml' trains on"),
        (MAML_JOB, "eval.knn_every=1", "eval.knn_every: method 'maml' trains on episodes"),
        (
            MAML_JOB,
            "data.episodes.tasks_per_step=3",
            "data.episodes.tasks_per_step: must be a multiple of scaling.num_workers (2), got 3",
        ),
        (MAML_JOB, "data.episodes.ways=20", "data.episodes.ways: method 'maml' has a 5-way head"),
        (MAML_JOB, "eval.fewshot.ways=10", "eval.fewshot.ways: method 'maml' has a 5-way head"),
        (MAML_JOB, "model.global_bn=true", "model.global_bn: method 'maml' normalises each task"),
        (MAML_JOB, "data.episodes.shots=0", "data.episodes.shots: must be >= 1, got 0"),
        (MAML_JOB, "eval.fewshot.shots=[]", "eval.fewshot.shots: must have at least 1 item(s)"),
    ],
)
def test_episodic_settings_fail_with_one_line(job_file: Path, override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_job(job_file, [override])
    message = str(error.value)
    assert expected in message and "\n" not in message


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "vit_mini", "vit_small"])
def test_width_on_a_backbone_without_one_fails_naming_the_key(backbone: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_job(QUICKSTART, [f"model.backbone={backbone}", "model.width=32"])
    expected = (
        f"{QUICKSTART}: model.width: only conv4 has a width; backbone {backbone!r} takes none "
        "(remove model.width)"
    )
    assert str(error.value) == expected


def test_width_on_conv4_and_no_width_elsewhere_are_valid() -> None:
    assert load_job(QUICKSTART, ["model.backbone=conv4", "model.width=32"]).model.width == 32
    unsized = load_job(QUICKSTART, ["model.backbone=resnet18", "model.width=null"])
    assert unsized.model.width is None


def test_elastic_workers_take_every_count_in_their_range() -> None:
    job = load_job(QUICKSTART, ["scaling.num_workers=[1,2]"])
    assert job.scaling.num_workers == (1, 2)
    assert list(job.scaling.worker_counts) == [1, 2]
    assert job.scaling.max_workers == 2


@pytest.mark.parametrize(
    ("overrides", "shared"),
    [
        ([], False),
        (["storage.path=/mnt/nfs/runs"], False),
        (["storage.path=/mnt/nfs/runs", "storage.shared=true"], True),
        (["storage.path=s3://bucket/runs"], True),
    ],
)
def test_only_object_stores_and_declared_mounts_are_shared(
    overrides: list[str], shared: bool
) -> None:
    assert load_job(QUICKSTART, overrides).storage.is_shared is shared


def test_a_clusters_storage_path_comes_from_its_environment(monkeypatch) -> None:
    monkeypatch.setenv("REPRLAB_STORAGE_PATH", "s3://bucket/runs")
    assert load_job(QUICKSTART, []).storage.path == "s3://bucket/runs"
    assert load_job(QUICKSTART, ["storage.path=/mnt/runs"]).storage.path == "/mnt/runs"
    monkeypatch.setenv("REPRLAB_STORAGE_PATH", "runs")
    with pytest.raises(ConfigError, match=r"storage.path: .* got 'runs' \(from \$REPRLAB_STORAGE"):
        load_job(QUICKSTART, [])
