"""The Ray Data pipeline: Parquet shards -> decode -> two batched augmented views -> trainers.

Shards hold decoded uint8 pixels and views travel as uint8, so a task's work is one
`frombuffer` plus a few batched tensor ops per thousand images, and the object store moves a
quarter of the bytes float32 views would need. The float conversion happens on the trainer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import ray
import torch
from ray.data import ExecutionOptions, ExecutionResources

from reprlab.data.augment import POLICIES, ViewPolicy, two_views
from reprlab.data.mix import mix_batch
from reprlab.data.shards import decode_images, load_manifest, shard_paths


@ray.remote(num_cpus=0)
class RowCounter:
    """A named counter that Ray Data tasks bump when they skip rows (corrupt images)."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, count: int) -> None:
        self.total += count

    def value(self) -> int:
        return self.total


def bad_row_counter(name: str) -> ray.actor.ActorHandle:
    """The run's bad-row counter, by name: the driver creates it before training (and kills it
    after), Ray Data tasks and Train workers find the same actor."""
    return RowCounter.options(name=name, get_if_exists=True).remote()


def augment_views(
    batch: dict[str, np.ndarray],
    *,
    shape: tuple[int, int, int],
    policy: ViewPolicy,
    counter_name: str | None = None,
) -> dict[str, np.ndarray]:
    """One Ray Data batch of shard rows -> `view1`, `view2` (uint8 [B,C,S,S]) and `label`; with
    the policy's mixer, `view1` is mixed within the batch and `label_mix` (the partner's label,
    int64) and `mix_weight` (the own label's weight, float32) come too.

    Rows whose image cannot be decoded are dropped and counted; rows are shuffled within the
    batch so training batches mix differently every epoch. Randomness is fresh per call:
    every epoch sees new views."""
    torch.set_num_threads(1)
    images, ok = decode_images(batch["image"], shape)
    skipped = int(len(ok) - ok.sum())
    if skipped and counter_name:
        bad_row_counter(counter_name).add.remote(skipped)
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    order = torch.randperm(images.shape[0], generator=gen)
    view1, view2 = two_views(torch.from_numpy(images)[order], policy, gen)
    labels = np.asarray(batch["label"])[ok][order.numpy()]
    columns = {"view2": view2.numpy(), "label": labels}
    if policy.mixer != "none":
        view1, partner, weight = mix_batch(view1, policy.mixer, policy.mix_alpha, gen)
        columns["label_mix"] = labels[partner.numpy()].astype(np.int64)
        columns["mix_weight"] = weight.numpy()
    return {"view1": view1.numpy(), **columns}


def build_policy(augment: dict, image_size: int) -> ViewPolicy:
    """The view policy named in a job's `data.augment` section (its fields, lists as tuples),
    making views of `image_size`."""
    params = {
        key: tuple(value) if isinstance(value, list) else value for key, value in augment.items()
    }
    policy = POLICIES[params.pop("policy", "simclr")]
    return policy(size=image_size, **params)


def view_dataset(
    dataset_dir: Path,
    split: str,
    policy: ViewPolicy,
    *,
    map_batch_size: int = 1024,
    counter_name: str | None = None,
    cache: bool = True,
) -> ray.data.Dataset:
    """A Ray Data dataset of augmented view pairs for one split of an ingested set; every
    iteration (epoch) draws new views.

    With `cache`, the shard rows are read once into the object store and each epoch only
    re-runs the augmentation: re-reading Parquet costs a second or more of task start-up per
    epoch, 8x the augmentation itself on mnist5k (benchmarks/data_pipeline.py). Without it,
    rows stream from Parquet every epoch, for splits larger than the object store."""
    manifest = load_manifest(dataset_dir)
    shape = tuple(manifest["image_shape"])
    rows = ray.data.read_parquet(shard_paths(dataset_dir, split), shuffle="files").select_columns(
        ["image", "label"]
    )
    if cache:
        rows = rows.materialize()
    return rows.randomize_block_order().map_batches(
        augment_views,
        batch_size=map_batch_size,
        batch_format="numpy",
        fn_kwargs={"shape": shape, "policy": policy, "counter_name": counter_name},
    )


def row_dataset(dataset_dir: Path, split: str) -> ray.data.Dataset:
    """The plain `image` and `label` rows of one split, read once into the object store: what
    the per-epoch monitors embed (no augmentation)."""
    rows = ray.data.read_parquet(shard_paths(dataset_dir, split)).select_columns(["image", "label"])
    return rows.materialize()


def ingest_options(data_cpus: float) -> ExecutionOptions:
    """Ray Data limits for training ingest: the pipeline gets `data_cpus` beside what the Train
    workers reserve, so readers, augmenters and trainers never wait on each other for CPUs."""
    return ExecutionOptions(resource_limits=ExecutionResources(cpu=data_cpus))
