"""The Ray Data pipeline: Parquet shards -> decode -> two batched augmented views -> trainers.

Shards hold decoded uint8 pixels and views travel as uint8, so a task's work is one
`frombuffer` plus a few batched tensor ops per thousand images, and the object store moves a
quarter of the bytes float32 views would need. The float conversion happens on the trainer.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import ray
import torch
from ray.data import ExecutionOptions, ExecutionResources, FileShuffleConfig
from ray.data.block import BlockAccessor

from reprlab.augment import ViewPolicy
from reprlab.augment.mix import mix_batch
from reprlab.data.handle import DatasetHandle
from reprlab.data.label_subsets import row_keys
from reprlab.data.shards import decode_images

BLOCKS_PER_MAP_BATCH = 4
"""Cached rows are cut into blocks of a quarter augmentation batch, so reordering the blocks
each epoch regroups the rows of every augmentation batch."""


@ray.remote(num_cpus=0)
class RowCounter:
    """Rows a run's Ray Data tasks skipped as corrupt; the driver creates it, tasks add to it,
    world rank 0 reads it after each epoch."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, count: int) -> None:
        self.total += count

    def value(self) -> int:
        return self.total


def pass_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s block order (distinct for every (seed, epoch) pair)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def batch_generator(seed: int, epoch: int, images: np.ndarray) -> torch.Generator:
    """The generator of one augmentation batch: a function of the job's seed, the epoch and the
    batch's rows (a CRC of their pixels, shards carry no row ids), so a seeded run draws the
    same views again and two configs of a sweep see the same noise."""
    rows = zlib.crc32(np.ascontiguousarray(images).data)
    state = np.random.SeedSequence([seed, epoch, rows]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> 1))


def augment_views(
    batch: dict[str, np.ndarray],
    *,
    shape: tuple[int, int, int],
    policy: ViewPolicy,
    second: ViewPolicy | None = None,
    hide_labels: bool = False,
    seed: int = 0,
    epoch: int = 0,
    counter: ray.actor.ActorHandle | None = None,
) -> dict[str, np.ndarray]:
    """One Ray Data batch of shard rows -> `view1`, `view2` (uint8 [B,C,S,S]) and `label`; with
    the policy's mixer, `view1` is mixed within the batch and `label_mix` (the partner's label,
    int64) and `mix_weight` (the own label's weight, float32) come too. With a `second` policy
    `view2` is drawn by it (FixMatch's weak and strong views of one image); `hide_labels` sets
    every label to -1 (unlabelled rows: a method never sees them).

    Rows whose image cannot be decoded are dropped and added to `counter`; rows are shuffled
    within the batch. Every draw comes from `batch_generator(seed, epoch, rows)`: each epoch
    sees new views, the same seed the same ones."""
    torch.set_num_threads(1)
    images, ok = decode_images(batch["image"], shape)
    skipped = int(len(ok) - ok.sum())
    if skipped and counter is not None:
        counter.add.remote(skipped)
    gen = batch_generator(seed, epoch, images)
    order = torch.randperm(images.shape[0], generator=gen)
    shuffled = torch.from_numpy(images)[order]
    if second is None:
        view1, view2 = policy.view_pair(shuffled, gen)
    else:
        view1, view2 = policy(shuffled, gen), second(shuffled, gen)
    labels = np.asarray(batch["label"])[ok][order.numpy()]
    if hide_labels:
        labels = np.full_like(labels, -1)
    columns = {"view2": view2.numpy(), "label": labels}
    if policy.mixer != "none":
        view1, partner, weight = mix_batch(view1, policy.mixer, policy.mix_alpha, gen)
        columns["label_mix"] = labels[partner.numpy()].astype(np.int64)
        columns["mix_weight"] = weight.numpy()
    return {"view1": view1.numpy(), **columns}


def keep_rows(
    batch: dict[str, np.ndarray], *, shape: tuple[int, int, int], keys: np.ndarray, repeat: int
) -> dict[str, np.ndarray]:
    """The rows of a Ray Data batch whose pixel checksum is in `keys` (a label subset's rows),
    each `repeat` times (an undecodable row has no checksum to match and is left out)."""
    images, ok = decode_images(batch["image"], shape)
    kept = np.flatnonzero(ok)[np.isin(row_keys(images), keys)]
    return {name: np.repeat(np.asarray(batch[name])[kept], repeat, axis=0) for name in batch}


@dataclass(frozen=True)
class RowSelection:
    """The rows a stream keeps (pixel checksums, data/label_subsets.py) and how many times each
    appears per epoch."""

    keys: np.ndarray
    repeat: int = 1


def view_dataset(
    dataset: DatasetHandle,
    split: str,
    policy: ViewPolicy,
    *,
    seed: int = 0,
    epochs: range = range(1),
    counter: ray.actor.ActorHandle | None = None,
    map_batch_size: int = 1024,
    cache: bool = True,
    second: ViewPolicy | None = None,
    hide_labels: bool = False,
    only: RowSelection | None = None,
) -> ray.data.Dataset:
    """Augmented view pairs of one split of an ingested set, one pass over its rows per epoch
    of `epochs`, as ONE stream: its consumers never wait for a pipeline to restart at an epoch
    boundary (0.4 s of a 4 s quickstart epoch did), and each epoch's views are fixed by
    (seed, epoch, rows).

    With `cache`, the shard rows are read once into the object store, in blocks of about a
    quarter of `map_batch_size` rows, and each epoch only re-runs the augmentation over the
    blocks in a new order, so an augmentation batch (and every training batch cut from it)
    mixes different rows each epoch: re-reading Parquet costs a second or more of task
    start-up per epoch, 8x the augmentation itself on mnist5k (benchmarks/data_pipeline.py).
    Without it, rows stream from Parquet every epoch, for splits larger than the object
    store. `second` and `hide_labels` go to `augment_views`; `only` keeps a label subset's
    rows (each repeated as it says) before anything else."""
    rows = ray.data.read_parquet(
        dataset.shard_paths(split), shuffle=FileShuffleConfig(seed=seed)
    ).select_columns(["image", "label"])
    count = dataset.rows(split)
    if only is not None:
        rows = rows.map_batches(
            keep_rows,
            batch_format="numpy",
            fn_kwargs={"shape": dataset.image_shape, "keys": only.keys, "repeat": only.repeat},
        )
        count = len(only.keys) * only.repeat
    if not epochs:  # resumed at the last epoch (a PBT exploit of a finished donor)
        return rows.limit(0)
    view_args = {
        "shape": dataset.image_shape,
        "policy": policy,
        "second": second,
        "hide_labels": hide_labels,
        "counter": counter,
    }
    if cache:
        blocks = max(1, math.ceil(count * BLOCKS_PER_MAP_BATCH / map_batch_size))
        cached = rows.repartition(blocks).materialize()
        refs = [ref for bundle in cached.iter_internal_ref_bundles() for ref in bundle.block_refs]
        return scheduled_views(refs, seed, epochs, view_args)
    return union_of_passes(rows, seed, epochs, map_batch_size, view_args)


def union_of_passes(
    rows: ray.data.Dataset,
    seed: int,
    epochs: range,
    map_batch_size: int,
    view_args: dict[str, object],
) -> ray.data.Dataset:
    """The views of every epoch of `epochs` as a union of one pass over `rows` per epoch, its
    blocks in that epoch's order: the stream of rows that are not cached (and, over cached
    rows, the baseline of benchmarks/view_stream.py)."""
    passes = [
        rows.randomize_block_order(seed=pass_seed(seed, epoch)).map_batches(
            augment_views,
            batch_size=map_batch_size,
            batch_format="numpy",
            fn_kwargs={**view_args, "seed": seed, "epoch": epoch},
        )
        for epoch in epochs
    ]
    return passes[0].union(*passes[1:]) if len(passes) > 1 else passes[0]


def block_groups(block_count: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The cached blocks' indices in epoch `epoch`'s order, cut into augmentation batches of
    `BLOCKS_PER_MAP_BATCH` blocks: every epoch regroups the rows."""
    order = np.random.default_rng(pass_seed(seed, epoch)).permutation(block_count)
    return [
        order[i : i + BLOCKS_PER_MAP_BATCH] for i in range(0, block_count, BLOCKS_PER_MAP_BATCH)
    ]


def augment_block_group(
    task: dict[str, np.ndarray],
    *,
    refs: list[ray.ObjectRef],
    seed: int,
    epochs: range,
    **view_args: object,
) -> dict[str, np.ndarray]:
    """Schedule row `task["id"]` (epoch-major over block groups) -> the views of that epoch's
    group of cached blocks."""
    groups = math.ceil(len(refs) / BLOCKS_PER_MAP_BATCH)
    epoch, group = divmod(int(task["id"][0]), groups)
    epoch = epochs[epoch]
    blocks = ray.get([refs[i] for i in block_groups(len(refs), seed, epoch)[group]])
    parts = [BlockAccessor.for_block(block).to_batch_format("numpy") for block in blocks]
    rows = {name: np.concatenate([part[name] for part in parts]) for name in ("image", "label")}
    return augment_views(rows, seed=seed, epoch=epoch, **view_args)


def scheduled_views(
    refs: list[ray.ObjectRef], seed: int, epochs: range, view_args: dict[str, object]
) -> ray.data.Dataset:
    """The views of every epoch of `epochs` over the cached blocks `refs` as ONE Ray Data map
    over a schedule of (epoch, block group) rows, one task each.

    It replaces a union of one pass per epoch (two operators each), whose SplitCoordinator held
    46 % of a core through a 100-epoch quickstart's early epochs; benchmarks/view_stream.py
    measures the two."""
    tasks = len(epochs) * math.ceil(len(refs) / BLOCKS_PER_MAP_BATCH)
    return ray.data.range(tasks, override_num_blocks=tasks).map_batches(
        augment_block_group,
        batch_size=1,
        batch_format="numpy",
        fn_kwargs={"refs": refs, "seed": seed, "epochs": epochs, **view_args},
    )


def row_dataset(dataset: DatasetHandle, split: str) -> ray.data.Dataset:
    """The plain `image` and `label` rows of one split, read once into the object store: what
    the per-epoch monitors embed (no augmentation)."""
    rows = ray.data.read_parquet(dataset.shard_paths(split)).select_columns(["image", "label"])
    return rows.materialize()


def ingest_options(data_cpus: float) -> ExecutionOptions:
    """Ray Data limits for training ingest: the pipeline gets `data_cpus` beside what the Train
    workers reserve, so readers, augmenters and trainers never wait on each other for CPUs; and
    batches leave in block order, so a seed replays the same stream, not just the same views.

    No object-store cap on purpose: Ray Data 2.60's executor loop spins without sleeping while
    backpressure leaves it no task to wait on (measured: the SplitCoordinator at 70 % of a core
    and quickstart epochs at 4.5 s instead of 2.7 s under a 16 MB cap), so a stream that may
    run ahead and then finish costs the trainers less CPU than one held back."""
    return ExecutionOptions(resource_limits=ExecutionResources(cpu=data_cpus), preserve_order=True)
