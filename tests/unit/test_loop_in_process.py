"""The worker loop itself, run in-process by Ray Train's local mode (num_workers=0), with no
cluster: an episodic method for short epochs, every metric reported; and the seeded view draws
of the two-view source's Ray Data tasks. (Checkpoints and resume need Ray Train's controller:
tests/integration.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprlab.augment import SimCLRPolicy
from reprlab.config import validate_job
from reprlab.data.pipeline import augment_views
from reprlab.data.shards import write_dataset
from reprlab.train.prepare import prepare
from reprlab.train.trainer import fit

CLASSES = 12


@pytest.fixture(scope="module")
def class_split_set(tmp_path_factory) -> str:
    """12 classes x 6 noisy 8x8 images, classes 0-5 train, 6-8 val, 9-11 test."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(CLASSES), 6)
    prototypes = rng.integers(0, 255, (CLASSES, 8, 8))
    images = (prototypes[labels] + rng.normal(0, 20, (labels.size, 8, 8))).clip(0, 255)
    names = [f"c{i}" for i in range(CLASSES)]
    split_of = np.array(["train"] * 6 + ["val"] * 3 + ["test"] * 3)
    class_split = {s: [names[k] for k in range(CLASSES) if split_of[k] == s] for s in set(split_of)}
    path = write_dataset(
        tmp_path_factory.mktemp("data"),
        "tiny_fewshot",
        images.astype(np.uint8),
        labels,
        names,
        split_of[labels],
        source="test",
        seed=0,
        test_fraction=0.25,
        extra={"class_split": class_split},
    )
    return str(path)


def protonet_job(dataset: str, epochs: int):
    return validate_job(
        {
            "name": "inproc",
            "method": "protonet",
            "data": {
                "dataset": dataset,
                "eval_split": "val",
                "image_size": 8,
                "episodes": {"ways": 3, "shots": 1, "queries": 2, "steps_per_epoch": 3},
            },
            "model": {"backbone": "conv4", "width": 4},
            "optim": {"epochs": epochs, "warmup_epochs": 0},
            "scaling": {"num_workers": 0},
            "eval": {
                "linear_probe": False,
                "knn": False,
                "online_linear": False,
                "fewshot": {
                    "ways": 3,
                    "shots": [1],
                    "queries": 2,
                    "episodes": 4,
                    "val_episodes": 2,
                },
            },
        }
    )


def test_an_episodic_run_trains_and_reports_every_epoch(class_split_set, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = fit(prepare(protonet_job(class_split_set, epochs=2)), tracking_uri=uri)
    metrics = result.metrics
    assert metrics["epoch"] == 2
    assert np.isfinite(metrics["train/loss"]) and metrics["train/loss"] > 0
    assert 0 <= metrics["train/query_acc"] <= 1
    assert metrics["train/images_per_s"] > 0
    assert {"fewshot/val_3way_1shot_acc", "fewshot/test_3way_1shot_acc"} <= set(metrics)
    assert 0 < metrics["train/lr"] < 0.1 * 1e-3  # the last step of the cosine schedule


def _rows(seed: int = 0) -> dict[str, np.ndarray]:
    images = np.random.default_rng(seed).integers(0, 255, (16, 8, 8, 1), dtype=np.uint8)
    return {
        "image": np.array([row.tobytes() for row in images], dtype=object),
        "label": np.arange(16),
    }


def test_views_are_a_function_of_seed_epoch_and_rows() -> None:
    policy = SimCLRPolicy(hflip_p=0.5).at_size(8)

    def views(seed: int, rows: dict, epoch: int = 0) -> np.ndarray:
        batch = augment_views(rows, shape=(8, 8, 1), policy=policy, seed=seed, epoch=epoch)
        return batch["view1"]

    assert np.array_equal(views(0, _rows()), views(0, _rows()))
    assert not np.array_equal(views(0, _rows()), views(1, _rows()))
    assert not np.array_equal(views(0, _rows()), views(0, _rows(), epoch=1))
    assert not np.array_equal(views(0, _rows()), views(0, _rows(seed=1)))


def test_batch_generator_depends_on_the_epoch() -> None:
    from reprlab.data.pipeline import batch_generator

    images = np.zeros((4, 2, 2, 1), np.uint8)
    draws = [torch.rand(3, generator=batch_generator(0, epoch, images)) for epoch in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
