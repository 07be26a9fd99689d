"""`data.augment` in job files: one strict model per policy, chosen by `policy`, whose fields
and defaults are the policy dataclass's, with one-line errors naming `data.augment.<key>`."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from reprlab.config import AUGMENT_CONFIGS, ConfigError, flatten, load_job, to_yaml, validate_job
from reprlab.data.augment import POLICIES, BYOLAugment, SimCLRAugment
from reprlab.data.pipeline import build_policy

QUICKSTART = Path(__file__).parents[2] / "jobs" / "quickstart.yaml"


def test_every_policy_has_a_config_model_and_back() -> None:
    assert set(AUGMENT_CONFIGS) == set(POLICIES)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_config_fields_and_defaults_are_the_policys(name: str) -> None:
    config = AUGMENT_CONFIGS[name](policy=name)
    own = {f.name for f in fields(POLICIES[name])} - {"size"}
    assert set(type(config).model_fields) - {"policy"} == own
    assert build_policy(config.model_dump(), 24) == POLICIES[name](size=24)
    assert build_policy(config.model_dump(mode="json"), 24) == POLICIES[name](size=24)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_selected_by_override_round_trips(name: str, tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(f"name: job\ndata:\n  augment:\n    policy: {name}\n")
    job = load_job(job_file)
    assert job.data.augment.policy == name
    assert validate_job(yaml.safe_load(to_yaml(job))) == job
    assert flatten(job)["data.augment.policy"] == name


def test_default_policy_is_simclr_and_shipped_jobs_keep_their_fields() -> None:
    job = load_job(QUICKSTART)
    assert isinstance(build_policy(job.data.augment.model_dump(), 28), SimCLRAugment)
    assert validate_job({}).data.augment.policy == "simclr"
    assert validate_job({"data": {"augment": {"hflip_p": 0.1}}}).data.augment.hflip_p == 0.1


def test_byol_job_builds_the_asymmetric_policy() -> None:
    job = load_job(QUICKSTART, ["data.augment.policy=byol", "data.augment.view2_solarize_p=0.3"])
    policy = build_policy(job.data.augment.model_dump(), job.data.image_size)
    assert isinstance(policy, BYOLAugment)
    assert (policy.view1_blur_p, policy.view2_blur_p, policy.view2_solarize_p) == (1.0, 0.1, 0.3)
    assert policy.crop_scale == (0.3, 1.0)  # the job's own crop kept


def test_strength_sets_the_resolved_jitter() -> None:
    augment = load_job(QUICKSTART, ["data.augment.strength=1.0"]).data.augment
    assert (augment.brightness, augment.saturation, augment.hue) == (0.8, 0.8, 0.2)
    policy = build_policy(augment.model_dump(), 28)
    assert policy == SimCLRAugment(**{**policy.__dict__, "strength": 1.0})


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["data.augment.policy=byol", "data.augment.blur_p=1"],
            "data.augment.blur_p: unknown key; allowed: brightness, contrast, crop_ratio",
        ),
        (["data.augment.blur_p=1.5"], "data.augment.blur_p: must be <= 1.0, got 1.5"),
        (
            ["data.augment.policy=cutout"],
            "data.augment.policy: must be one of 'simclr', 'byol', 'mae', 'randaugment'",
        ),
        (
            ["data.augment.policy=weak"],
            "data.augment.crop_scale: unknown key; allowed: hflip_p, mix_alpha, mixer, padding",
        ),
        (
            ["data.augment.policy=mae", "data.augment.crop_scale=[0.5,0.2]"],
            "data.augment.crop_scale: must be 0 < low <= high <= 1, got [0.5, 0.2]",
        ),
        (
            ["data.augment.policy=randaugment", "data.augment.magnitude=31"],
            "data.augment.magnitude: must be <= 30, got 31",
        ),
        (["data.augment.strength=2"], "data.augment.strength: must be <= 1.25, got 2"),
        (["data.augment.mixer=mosaic"], "data.augment.mixer: must be one of 'none', 'mixup'"),
        (["data.augment.mix_alpha=0"], "data.augment.mix_alpha: must be > 0.0, got 0"),
        (["data.augment=3"], "data.augment: Input should be a valid dictionary"),
    ],
)
def test_bad_augment_keys_fail_with_one_line(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_job(QUICKSTART, overrides)
    message = str(error.value)
    assert message.startswith(f"{QUICKSTART}: ")
    assert expected in message
    assert "\n" not in message
