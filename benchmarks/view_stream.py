"""What the shape of the view stream's plan costs over a long run: the quickstart's views of
mnist5k for many epochs, split between 2 consumers as Ray Train splits them (`streaming_split`,
one thread each, doing a fixed amount of CPU work per batch as a trainer would), once through
reprlab's cached stream (one map over an (epoch, block group) schedule) and once as a union of
one pass per epoch over the same cached blocks (reprlab's plan before), in one command.

    .venv/bin/python benchmarks/view_stream.py [jobs/quickstart.yaml] [--epochs 100]

Prints each plan's wall time and the ratio of the two.
"""

from __future__ import annotations

import argparse
import math
import threading
import time

import ray
import torch

from reprlab.config import load_job
from reprlab.data.handle import DatasetHandle
from reprlab.data.pipeline import (
    BLOCKS_PER_MAP_BATCH,
    augment_views,
    cached_passes,
    ingest_options,
    pass_seed,
)

WORK = torch.randn(192, 192)
MATMULS_PER_BATCH = 60  # about 50 ms of one core: a third of a quickstart step's compute


def consume(split: ray.data.DataIterator, batch_size: int) -> None:
    """Iterate one split with a fixed amount of CPU work per batch, as a trainer would."""
    torch.set_num_threads(1)
    for _ in split.iter_batches(batch_size=batch_size, batch_format="numpy"):
        product = WORK
        for _ in range(MATMULS_PER_BATCH):
            product = WORK @ product.tanh()


def timed(stream: ray.data.Dataset, batch_size: int) -> float:
    """Seconds for 2 consumer threads to drain their halves of `stream`."""
    splits = stream.streaming_split(2, equal=True)
    started = time.perf_counter()
    threads = [threading.Thread(target=consume, args=(split, batch_size)) for split in splits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def union_of_passes(cached: ray.data.Dataset, epochs: range, views: dict) -> ray.data.Dataset:
    """The plan before: each epoch reorders the cached blocks and augments them, one operator
    chain per epoch, all unioned."""
    passes = [
        cached.randomize_block_order(seed=pass_seed(views["seed"], epoch)).map_batches(
            augment_views,
            batch_size=1024,
            batch_format="numpy",
            fn_kwargs={**views, "epoch": epoch},
        )
        for epoch in epochs
    ]
    return passes[0].union(*passes[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", default="jobs/quickstart.yaml")
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    job = load_job(args.job)
    dataset = DatasetHandle.open_or_ingest(job.data.dataset)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options = ingest_options(job.data.data_cpus)
    split = job.data.train_split
    count = dataset.rows(split)
    blocks = max(1, math.ceil(count * BLOCKS_PER_MAP_BATCH / job.data.map_batch_size))
    rows = ray.data.read_parquet(dataset.shard_paths(split)).select_columns(["image", "label"])
    cached = rows.repartition(blocks).materialize()
    views = {
        "shape": dataset.image_shape,
        "policy": job.data.augment.at_size(job.data.image_size),
        "second": None,
        "hide_labels": False,
        "seed": job.seed,
        "counter": None,
    }
    epochs = range(args.epochs)
    batch = job.data.batch_size // 2
    plans = [
        ("one map over a schedule (reprlab)", cached_passes(cached, epochs, views)),
        ("union of one pass per epoch (before)", union_of_passes(cached, epochs, views)),
    ]
    print(f"| {args.epochs} epochs of {args.job}'s views, 2 consumers | wall time |")
    print("|---|---|")
    seconds = []
    for name, stream in plans:
        seconds.append(timed(stream, batch))
        print(f"| {name} | {seconds[-1]:.0f} s |")
    print(f"ratio reprlab / before: {seconds[0] / seconds[1]:.2f}x")
    ray.shutdown()


if __name__ == "__main__":
    main()
