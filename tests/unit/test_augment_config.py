"""`data.augment` in job files: one strict pydantic model per policy (reprlab.augment), chosen
by `policy`, which is both the job schema and the transform: its job keys and defaults are
pinned, they round-trip from YAML to views, and bad keys fail with one line naming
`data.augment.<key>`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from reprlab.augment import POLICIES, BYOLPolicy, SimCLRPolicy, build_policy
from reprlab.augment.policies import simclr_jitter
from reprlab.config import ConfigError, flatten, load_job, to_yaml, validate_job

QUICKSTART = Path(__file__).parents[2] / "jobs" / "quickstart.yaml"

CROP = {"crop_scale": [0.2, 1.0], "crop_ratio": [0.75, 4 / 3], "hflip_p": 0.5}
JITTER = {
    "brightness": 0.4,
    "contrast": 0.4,
    "saturation": 0.4,
    "hue": 0.1,
    "jitter_p": 0.8,
    "grayscale_p": 0.2,
}
FLIP_TRANSLATE = {"hflip_p": 0.5, "translate": 0.125, "padding_mode": "reflect"}
# every policy's job keys (besides policy, mixer, mix_alpha) and their defaults, as users have them
JOB_KEYS = {
    "simclr": {**CROP, **JITTER, "strength": None, "blur_p": 0.0, "num_ops": 0, "magnitude": 9},
    "byol": {
        **CROP,
        **JITTER,
        "crop_scale": [0.08, 1.0],
        "saturation": 0.2,
        "view1_blur_p": 1.0,
        "view2_blur_p": 0.1,
        "view1_solarize_p": 0.0,
        "view2_solarize_p": 0.2,
    },
    "mae": CROP,
    "randaugment": {**CROP, "crop_scale": [0.08, 1.0], "num_ops": 2, "magnitude": 9},
    "three_augment": {**CROP, "crop_scale": [0.08, 1.0], "color_jitter": 0.3},
    "weak": FLIP_TRANSLATE,
    "strong": {**FLIP_TRANSLATE, "num_ops": 2, "magnitude": 10, "cutout": 0.5},
}


def test_registry_order_and_job_keys_with_defaults_are_pinned() -> None:
    assert list(POLICIES) == list(JOB_KEYS)
    for name, keys in JOB_KEYS.items():
        expected = {"policy": name, "mixer": "none", "mix_alpha": 1.0, **keys}
        assert POLICIES[name]().model_dump(mode="json") == expected, name


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policys_job_keys_round_trip_from_yaml_to_views(name: str, tmp_path: Path) -> None:
    section = {"policy": name, **JOB_KEYS[name], "hflip_p": 0.25}
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump({"data": {"image_size": 24, "augment": section}}))
    job = load_job(job_file)
    augment = job.data.augment
    assert isinstance(augment, POLICIES[name])
    assert augment.model_dump(mode="json") == {"mixer": "none", "mix_alpha": 1.0, **section}
    for dumped in (augment.model_dump(), augment.model_dump(mode="json"), augment):
        assert build_policy(dumped, 24) == augment.at_size(24)
    images = torch.randint(0, 256, (6, 16, 16, 3), dtype=torch.uint8)
    view1, view2 = augment.at_size(24).view_pair(images, torch.Generator().manual_seed(0))
    assert view1.shape == view2.shape == (6, 3, 24, 24)
    assert view1.dtype == view2.dtype == torch.uint8


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
    assert isinstance(job.data.augment, SimCLRPolicy)
    assert isinstance(build_policy(job.data.augment.model_dump(), 28), SimCLRPolicy)
    assert validate_job({}).data.augment.policy == "simclr"
    assert validate_job({"data": {"augment": {"hflip_p": 0.1}}}).data.augment.hflip_p == 0.1


def test_byol_job_builds_the_asymmetric_policy(tmp_path: Path) -> None:
    quickstart = yaml.safe_load(QUICKSTART.read_text())
    for key in ("num_ops", "magnitude"):  # RandAugment's keys, which BYOL's views do not have
        del quickstart["data"]["augment"][key]
    plain_views = tmp_path / "quickstart_plain_views.yaml"
    plain_views.write_text(yaml.safe_dump(quickstart))
    job = load_job(plain_views, ["data.augment.policy=byol", "data.augment.view2_solarize_p=0.3"])
    policy = build_policy(job.data.augment.model_dump(), job.data.image_size)
    assert isinstance(policy, BYOLPolicy) and policy.size == job.data.image_size
    assert (policy.view1_blur_p, policy.view2_blur_p, policy.view2_solarize_p) == (1.0, 0.1, 0.3)
    assert policy.crop_scale == (0.3, 1.0)  # the job's own crop kept


def test_strength_sets_the_resolved_jitter() -> None:
    augment = load_job(QUICKSTART, ["data.augment.strength=1.0"]).data.augment
    assert (augment.brightness, augment.saturation, augment.hue) == (0.8, 0.8, 0.2)
    assert (augment.brightness, augment.contrast, augment.saturation, augment.hue) == (
        simclr_jitter(1.0)
    )
    explicit = SimCLRPolicy(**{**augment.model_dump(), "brightness": 0.1, "strength": 1.0})
    assert explicit == augment  # strength wins over the amounts it sets
    assert build_policy(augment.model_dump(), 28) == augment.at_size(28)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (  # the quickstart's RandAugment keys: BYOL's views have none
            ["data.augment.policy=byol"],
            "data.augment.num_ops: unknown key; allowed: brightness, contrast, crop_ratio",
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
            ["data.augment.policy=randaugment", "data.augment.crop_scale=[0.5,0.2]"],
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
