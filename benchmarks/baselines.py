"""Reference numbers for a job's evaluation, on the same split and the same probes:
raw pixels, a random-init encoder, and a plain single-process PyTorch SimCLR loop (no Ray, no
MLflow) with the job's own model, augmentation, loss and optimiser settings.

    .venv/bin/python benchmarks/baselines.py [jobs/quickstart.yaml] [--minutes 4]

The plain loop trains for at most --minutes (or the job's epochs, whichever ends first) and
prints its probe accuracy and epochs/minute next to the platform's, for the README table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from reprlab.augment.ops import float_images
from reprlab.config import JobConfig, load_job
from reprlab.data.handle import DatasetHandle
from reprlab.eval.features import evaluate_encoder
from reprlab.eval.knn import knn_accuracy
from reprlab.eval.linear_probe import linear_probe_accuracy
from reprlab.methods import Method
from reprlab.train.build import make_method
from reprlab.train.optim import make_optimizer, set_lr, warmup_cosine_lr


def raw_pixel_scores(train, test) -> dict[str, float]:
    (train_x, train_y), (test_x, test_y) = train, test
    flat_train = train_x.reshape(len(train_x), -1).astype(np.float32) / 255
    flat_test = test_x.reshape(len(test_x), -1).astype(np.float32) / 255
    return {
        "linear_probe": linear_probe_accuracy(flat_train, train_y, flat_test, test_y),
        "knn": knn_accuracy(flat_train, train_y, flat_test, test_y),
    }


def plain_loop(
    job: JobConfig, dataset: DatasetHandle, minutes: float, epochs: int | None = None
) -> tuple[Method, list[float]]:
    """Single-process loop over in-memory uint8 images with the job's model, view policy, loss,
    optimiser and schedule; returns the method and each epoch's seconds."""
    torch.manual_seed(job.seed)
    images = torch.from_numpy(dataset.read(job.data.train_split)[0])
    method = make_method(job, dataset.in_chans)
    optimizer = make_optimizer(job, method)
    policy = job.data.augment.at_size(job.data.image_size)
    generator = torch.Generator().manual_seed(job.seed)
    steps_per_epoch = len(images) // job.data.batch_size
    total = steps_per_epoch * job.optim.epochs
    warmup = int(job.optim.warmup_epochs * steps_per_epoch)
    started, step, epoch_times = time.perf_counter(), 0, []
    wanted = epochs or job.optim.epochs
    while len(epoch_times) < wanted and time.perf_counter() - started < minutes * 60:
        epoch_started = time.perf_counter()
        order = torch.randperm(len(images), generator=generator)
        method.train()
        for index in range(steps_per_epoch):
            rows = order[index * job.data.batch_size : (index + 1) * job.data.batch_size]
            view1, view2 = policy.view_pair(images[rows], generator)
            set_lr(optimizer, warmup_cosine_lr(step, total, warmup, job.optim.lr))
            loss = method(float_images({"view1": view1, "view2": view2}))["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        epoch_times.append(time.perf_counter() - epoch_started)
    return method, epoch_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", default="jobs/quickstart.yaml")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    job = load_job(args.job)
    dataset = DatasetHandle.open_or_ingest(job.data.dataset)
    train = dataset.read(job.data.train_split)
    test = dataset.read(job.data.eval_split)

    rows = [("raw pixels", raw_pixel_scores(train, test))]
    torch.manual_seed(job.seed)
    random_scores = evaluate_encoder(make_method(job, dataset.in_chans), dataset, job)
    rows.append((f"random-init {job.model.backbone}", _short(random_scores)))
    method, epoch_times = plain_loop(job, dataset, args.minutes)
    scores = evaluate_encoder(method, dataset, job)
    minutes = sum(epoch_times) / 60
    name = f"plain PyTorch SimCLR loop ({len(epoch_times)} epochs, {minutes:.1f} min)"
    rows.append((name, _short(scores)))

    print(f"| baseline on {job.data.dataset} | linear probe | kNN (k={job.eval.knn_k}) |")
    print("|---|---|---|")
    for name, result in rows:
        print(f"| {name} | {result['linear_probe']:.1%} | {result['knn']:.1%} |")


def _short(metrics: dict[str, float]) -> dict[str, float]:
    return {"linear_probe": metrics["eval/linear_probe_acc"], "knn": metrics["eval/knn_acc"]}


if __name__ == "__main__":
    main()
