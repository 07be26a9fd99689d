"""What the platform costs per epoch: the quickstart job for a few epochs through `reprlab run`'s
own path (Ray Data views, 2 Ray Train workers, report + checkpoint each epoch, MLflow; online
evaluation off) and through a plain single-process PyTorch loop with the same model, view
policy, loss, optimiser and CPU threads, in one command.

    .venv/bin/python benchmarks/train_overhead.py [jobs/quickstart.yaml] [--epochs 6]

Prints each epoch's seconds for both, and platform/plain throughput (plain seconds per epoch
over platform seconds per epoch, median and mean of the epochs after the first, which pays for
start-up on both sides). The platform's epoch is wall time between two epochs' MLflow records,
so it includes the report barrier, the checkpoint and the Ray Data hand-off; its first epoch is
the loop's own time (its wall time would include starting Ray).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import torch
from baselines import plain_loop
from mlflow.tracking import MlflowClient

from reprlab.config import load_job
from reprlab.data.catalog import ingest
from reprlab.data.handle import DatasetHandle
from reprlab.train.prepare import prepare
from reprlab.train.run import run_prepared

NO_EVALUATION = [
    "eval.online_linear=false",
    "eval.knn_every=0",
    "eval.linear_probe=false",
    "eval.knn=false",
    "tracking.log_model=false",
    "tracking.augment_grid_pairs=0",
]


def platform_epochs(job_file: str, epochs: int) -> list[float]:
    """Seconds of each epoch of a platform run, from the MLflow timestamps of its records."""
    job = load_job(job_file, [f"optim.epochs={epochs}", *NO_EVALUATION])
    summary = run_prepared(prepare(job))
    record = summary.record
    history = MlflowClient(record.tracking_uri).get_metric_history(record.mlflow_run_id, "epoch")
    stamps = [m.timestamp / 1000 for m in sorted(history, key=lambda m: m.step)]
    loop = MlflowClient(record.tracking_uri).get_metric_history(
        record.mlflow_run_id, "train/epoch_time_s"
    )
    first = min(m.value for m in loop if m.step == 1)
    return [first, *(b - a for a, b in zip(stamps, stamps[1:], strict=False))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", default="jobs/quickstart.yaml")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("REPRLAB_HOME", tempfile.mkdtemp(prefix="reprlab-overhead-"))
    ingest("mnist5k")

    job = load_job(args.job, [f"optim.epochs={args.epochs}", *NO_EVALUATION])
    threads = max(1, job.scaling.num_workers) * job.scaling.torch_threads
    torch.set_num_threads(threads)
    dataset = DatasetHandle.open(job.data.dataset)
    _, plain = plain_loop(job, dataset, minutes=60, epochs=args.epochs)
    platform = platform_epochs(args.job, args.epochs)

    print(f"per-epoch seconds, {job.name} ({job.data.dataset}), {threads} torch threads in all")
    print("| epoch | platform | plain loop |")
    print("|---|---|---|")
    for epoch, (ours, theirs) in enumerate(zip(platform, plain, strict=False), 1):
        print(f"| {epoch} | {ours:.2f} | {theirs:.2f} |")
    for name, average in (("median", statistics.median), ("mean", statistics.fmean)):
        ours, theirs = average(platform[1:]), average(plain[1:])
        print(
            f"{name} after epoch 1: platform {ours:.2f} s, plain {theirs:.2f} s, "
            f"platform/plain throughput {theirs / ours:.2f}"
        )


if __name__ == "__main__":
    main()
