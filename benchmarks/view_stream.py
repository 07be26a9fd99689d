"""The multi-epoch view stream two Train workers drain: reprlab's one map over an (epoch, block
group) schedule against the union of one pass per epoch it replaced (two operators a pass), on
the same cached blocks, views, CPU budget and consumers, in one command. Prints each drain's
seconds and the ratio.

    .venv/bin/python benchmarks/view_stream.py [--epochs 30] [--dataset mnist5k]
"""

from __future__ import annotations

import argparse
import math
import time

import ray

from reprlab.augment import SimCLRPolicy
from reprlab.data.handle import DatasetHandle
from reprlab.data.pipeline import (
    BLOCKS_PER_MAP_BATCH,
    ingest_options,
    union_of_passes,
    view_dataset,
)

MAP_BATCH_SIZE = 1024
CONSUMER_BATCH = 128


@ray.remote(num_cpus=0.5)
class Consumer:
    """One Train worker's side of the stream: iterates its split as the trainers do."""

    def drain(self, split: ray.data.DataIterator) -> int:
        rows = 0
        for batch in split.iter_torch_batches(batch_size=CONSUMER_BATCH, prefetch_batches=2):
            rows += batch["label"].shape[0]
        return rows


def cached_union(dataset: DatasetHandle, policy: SimCLRPolicy, epochs: int) -> ray.data.Dataset:
    """The stream before: the same cached blocks, re-ordered and augmented once per epoch."""
    count = dataset.rows("train")
    blocks = max(1, math.ceil(count * BLOCKS_PER_MAP_BATCH / MAP_BATCH_SIZE))
    rows = ray.data.read_parquet(dataset.shard_paths("train")).select_columns(["image", "label"])
    cached = rows.repartition(blocks).materialize()
    view_args = {"shape": dataset.image_shape, "policy": policy}
    return union_of_passes(cached, 0, range(epochs), MAP_BATCH_SIZE, view_args)


def drain_seconds(stream: ray.data.Dataset, consumers: list) -> tuple[float, int]:
    """Seconds for `consumers` to drain `stream` split between them, and the rows they got."""
    stream.context.execution_options = ingest_options(1.0)
    splits = stream.streaming_split(len(consumers), equal=True)
    started = time.perf_counter()
    rows = sum(ray.get([c.drain.remote(s) for c, s in zip(consumers, splits, strict=True)]))
    return time.perf_counter() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    dataset = DatasetHandle.open_or_ingest(args.dataset)
    policy = SimCLRPolicy().at_size(dataset.image_shape[0])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    consumers = [Consumer.remote() for _ in range(2)]

    before, rows_before = drain_seconds(cached_union(dataset, policy, args.epochs), consumers)
    print(f"union of {args.epochs} passes:      {before:6.1f} s ({rows_before:,} rows)")
    scheduled = view_dataset(dataset, "train", policy, epochs=range(args.epochs))
    after, rows_after = drain_seconds(scheduled, consumers)
    print(f"one map over the schedule: {after:6.1f} s ({rows_after:,} rows)")
    print(f"ratio schedule / union: {after / before:.2f}x")
    ray.shutdown()


if __name__ == "__main__":
    main()
