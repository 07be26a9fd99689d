"""Episodes: N-way K-shot Q-query layout, seeding, one split only (checked against the
manifest), and the per-episode accuracy with its 95 % interval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reprlab.data.episodes import EpisodeSampler, EpisodeSpec, episode_batch
from reprlab.data.handle import DatasetHandle
from reprlab.data.manifest import ShardError
from reprlab.data.shards import write_dataset
from reprlab.eval.few_shot import (
    frozen_fewshot,
    linear_head_accuracy,
    match_channels,
    mean_ci95,
    prototype_accuracy,
)

LABELS = np.repeat(np.arange(10), 8)  # 10 classes x 8 rows


def test_episode_has_n_classes_k_support_q_query_disjoint_rows() -> None:
    sampler = EpisodeSampler(LABELS, EpisodeSpec(ways=4, shots=2, queries=3), seed=0)
    episode = sampler.episode(7)
    assert len(set(episode.classes.tolist())) == 4
    assert episode.support.shape == (8,) and episode.query.shape == (12,)
    assert not set(episode.support) & set(episode.query)
    support_classes = LABELS[episode.support].reshape(4, 2)
    query_classes = LABELS[episode.query].reshape(4, 3)
    assert (support_classes == episode.classes[:, None]).all()  # class-major, in class order
    assert (query_classes == episode.classes[:, None]).all()


def test_episode_depends_only_on_seed_and_index() -> None:
    spec = EpisodeSpec(5, 1, 2)
    a, b = EpisodeSampler(LABELS, spec, seed=3), EpisodeSampler(LABELS, spec, seed=3)
    b.episode(99)  # drawing other episodes first changes nothing
    assert np.array_equal(a.episode(5).support, b.episode(5).support)
    assert np.array_equal(a.episode(5).query, b.episode(5).query)
    other = EpisodeSampler(LABELS, spec, seed=4)
    assert not all(np.array_equal(a.episode(i).support, other.episode(i).support) for i in range(5))
    assert len({tuple(a.episode(i).classes) for i in range(20)}) > 10


def test_too_few_classes_is_a_one_line_error() -> None:
    with pytest.raises(
        ValueError, match=r"glyphs/test: 0 of 10 classes have >= 20 images"
    ) as error:
        EpisodeSampler(LABELS, EpisodeSpec(5, 5, 15), seed=0, where="glyphs/test")
    assert "\n" not in str(error.value)


def test_episode_batch_stacks_tasks_with_relabelled_classes() -> None:
    images = torch.arange(LABELS.size, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    sampler = EpisodeSampler(LABELS, EpisodeSpec(3, 2, 1), seed=0)
    batch = episode_batch(images, sampler, [0, 1])
    assert batch["support"].shape == (2, 6, 1, 2, 2) and batch["query"].shape == (2, 3, 1, 2, 2)
    assert batch["support_label"].tolist() == [[0, 0, 1, 1, 2, 2]] * 2
    assert batch["query_label"].tolist() == [[0, 1, 2]] * 2
    rows = batch["support"][1, :, 0, 0, 0].long().numpy()
    assert np.array_equal(rows, sampler.episode(1).support)
    from reprlab.config import validate_job
    from reprlab.train.sources import EpisodeSource

    job = validate_job(
        {
            "method": "protonet",
            "data": {"episodes": {"ways": 3, "tasks_per_step": 2}},
            "eval": {"online_linear": False},
        }
    )
    assert EpisodeSource(job, None).images_in(batch) == 2 * 6 + 2 * 3


def _class_split_dataset(tmp_path, mislabel: bool = False):
    classes = [f"c{i}" for i in range(12)]
    labels = np.repeat(np.arange(12), 5)
    splits = np.where(labels < 6, "train", np.where(labels < 9, "val", "test"))
    if mislabel:
        splits[0] = "test"  # a train-class row filed under test
    images = np.random.default_rng(0).integers(0, 255, (labels.size, 4, 4), dtype=np.uint8)
    class_split = {
        s: [classes[k] for k in range(12) if split_of(k) == s] for s in ("train", "val", "test")
    }
    path = write_dataset(
        tmp_path,
        "tiny",
        images,
        labels,
        classes,
        splits,
        source="test",
        seed=0,
        test_fraction=0.25,
    )
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["class_split"] = class_split
    manifest_path.write_text(json.dumps(manifest))
    return path, manifest


def split_of(label: int) -> str:
    return "train" if label < 6 else "val" if label < 9 else "test"


def test_episodes_never_mix_splits_on_the_manifest(tmp_path) -> None:
    path, manifest = _class_split_dataset(tmp_path)
    for split in ("train", "val", "test"):
        images, labels = DatasetHandle.open(str(path)).class_images(split)
        assert images.shape[1:] == (1, 4, 4)
        sampler = EpisodeSampler(labels, EpisodeSpec(3, 1, 2), seed=0)
        allowed = set(manifest["class_split"][split])
        for i in range(50):
            episode = sampler.episode(i)
            rows = np.concatenate([episode.support, episode.query])
            assert {manifest["classes"][c] for c in labels[rows]} <= allowed


def test_a_row_of_another_splits_class_is_refused(tmp_path) -> None:
    path, _ = _class_split_dataset(tmp_path, mislabel=True)
    with pytest.raises(ShardError, match=r"split 'test' row 0 has class 'c0'"):
        DatasetHandle.open(str(path)).class_images("test")


def test_mean_ci95_is_196_sample_std_over_root_n() -> None:
    accuracies = np.array([0.8, 0.9, 1.0, 0.7])
    mean, half = mean_ci95(accuracies)
    sample_std = np.sqrt(((accuracies - 0.85) ** 2).sum() / 3)
    assert mean == pytest.approx(0.85)
    assert half == pytest.approx(1.96 * sample_std / 2)


def test_prototype_accuracy_matches_hand_computation() -> None:
    support = torch.tensor([[[0.0, 0.0], [0.0, 2.0], [4.0, 0.0], [4.0, 2.0]]])  # means (0,1), (4,1)
    support_label = torch.tensor([[0, 0, 1, 1]])
    query = torch.tensor([[[1.9, 1.0], [2.1, 1.0], [5.0, 5.0], [-1.0, 0.0]]])
    query_label = torch.tensor([[0, 0, 1, 1]])  # 1.9 -> class 0 ok, 2.1 -> 1 wrong, ok, wrong
    assert prototype_accuracy(support, support_label, query, query_label).tolist() == [0.5]


def test_linear_head_fits_separable_support() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, 16, generator=generator) * 3
    support = centres.repeat_interleave(2, dim=1) + 0.1 * torch.randn(
        3, 10, 16, generator=generator
    )
    query = centres.repeat_interleave(3, dim=1) + 0.1 * torch.randn(3, 15, 16, generator=generator)
    support_label = torch.arange(5).repeat_interleave(2).repeat(3, 1)
    query_label = torch.arange(5).repeat_interleave(3).repeat(3, 1)
    accuracy = linear_head_accuracy(support, support_label, query, query_label)
    assert accuracy.shape == (3,) and (accuracy == 1).all()
    wrong = linear_head_accuracy(support, support_label, query, (query_label + 1) % 5)
    assert (wrong == 0).all()


def test_frozen_fewshot_reports_both_classifiers_with_intervals() -> None:
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.normal(size=(LABELS.size, 8)) + LABELS[:, None] * 2.0).float()
    metrics = frozen_fewshot(features, LABELS, ways=5, shots=[1, 2], queries=3, episodes=20, seed=0)
    assert set(metrics) == {
        f"5way_{k}shot_{c}_{m}"
        for k in (1, 2)
        for c in ("proto", "linear")
        for m in ("acc", "ci95")
    }
    assert metrics["5way_2shot_proto_acc"] > 0.9


def test_match_channels() -> None:
    grey = np.full((2, 3, 3, 1), 7, dtype=np.uint8)
    assert match_channels(grey, 3).shape == (2, 3, 3, 3)
    rgb = np.stack([np.full((3, 3), v, np.uint8) for v in (0, 30, 60)], axis=-1)[None]
    assert match_channels(rgb, 1)[0, 0, 0, 0] == 30


def test_a_classifier_probe_on_a_class_split_dataset_fails_before_ray(tmp_path) -> None:
    from reprlab.config import ConfigError, validate_job
    from reprlab.train.prepare import prepare

    path, _ = _class_split_dataset(tmp_path)
    job = validate_job({"data": {"dataset": str(path), "image_size": 4}, "eval": {"knn": False}})
    with pytest.raises(ConfigError, match=r"eval.linear_probe: .* splits its classes"):
        prepare(job)
    job = validate_job(
        {
            "data": {"dataset": str(path), "eval_split": "val", "image_size": 4},
            "eval": {"linear_probe": False, "knn": False, "online_linear": False},
        }
    )
    assert prepare(job).dataset.path == path


def test_rotated_classes_turn_every_image_of_a_class_alike() -> None:
    images = torch.randint(0, 256, (LABELS.size, 1, 5, 5), dtype=torch.uint8)
    sampler = EpisodeSampler(LABELS, EpisodeSpec(4, 2, 3), seed=1, rotate_classes=True)
    turns_seen = set()
    for index in range(6):
        batch = episode_batch(images, sampler, [index])
        episode = sampler.episode(index)
        for rows, key, per_class in ((episode.support, "support", 2), (episode.query, "query", 3)):
            for j, row in enumerate(rows):
                k = int(episode.quarter_turns[j // per_class])
                turns_seen.add(k)
                expected = torch.rot90(images[row], k, dims=(-2, -1))
                assert torch.equal(batch[key][0, j], expected)
    assert turns_seen == {0, 1, 2, 3}
    plain = EpisodeSampler(LABELS, EpisodeSpec(4, 2, 3), seed=1)
    assert not plain.episode(0).quarter_turns.any()


def test_episodes_a_split_cannot_give_fail_before_ray(tmp_path) -> None:
    from reprlab.config import ConfigError, validate_job
    from reprlab.train.prepare import prepare

    path, _ = _class_split_dataset(tmp_path)  # 3 classes x 5 images in val and test
    base = {
        "data": {"dataset": str(path), "eval_split": "val", "image_size": 4},
        "eval": {"linear_probe": False, "knn": False, "online_linear": False},
    }
    fits = {"ways": 3, "shots": [1, 2], "queries": 3, "episodes": 2, "val_episodes": 2}
    prepare(validate_job({**base, "eval": {**base["eval"], "fewshot": fits}}))
    too_many = {**fits, "queries": 4}  # 2 + 4 > 5 images per class
    with pytest.raises(ConfigError, match=r"eval.fewshot: .* split 'test' has 0 classes with >= 6"):
        prepare(validate_job({**base, "eval": {**base["eval"], "fewshot": too_many}}))
    episodes = {"ways": 7, "shots": 1, "queries": 1, "tasks_per_step": 2}
    maml = {**base, "method": "maml", "method_args": {"ways": 7}}
    maml["data"] = {**base["data"], "episodes": episodes}
    with pytest.raises(ConfigError, match=r"data.episodes: .* split 'train' has 6 classes"):
        prepare(validate_job(maml))
