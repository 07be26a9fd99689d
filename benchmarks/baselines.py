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

from reprlab.config import load_job
from reprlab.data.augment import two_views
from reprlab.data.catalog import ingest, resolve_dataset
from reprlab.data.pipeline import build_policy
from reprlab.data.shards import load_manifest, read_split
from reprlab.eval.features import evaluate_encoder
from reprlab.eval.knn import knn_accuracy
from reprlab.eval.linear_probe import linear_probe_accuracy
from reprlab.train.loop import images_to_float, make_method, make_optimizer, warmup_cosine_lr


def raw_pixel_scores(train, test) -> dict[str, float]:
    (train_x, train_y), (test_x, test_y) = train, test
    flat_train = train_x.reshape(len(train_x), -1).astype(np.float32) / 255
    flat_test = test_x.reshape(len(test_x), -1).astype(np.float32) / 255
    return {
        "linear_probe": linear_probe_accuracy(flat_train, train_y, flat_test, test_y),
        "knn": knn_accuracy(flat_train, train_y, flat_test, test_y),
    }


def plain_simclr(job, dataset_dir, in_chans: int, minutes: float) -> tuple[dict, int, float]:
    """Single-process loop over in-memory uint8 images; returns scores, epochs, minutes."""
    torch.manual_seed(job.seed)
    images, _, _ = read_split(dataset_dir, job.data.train_split)
    images = torch.from_numpy(images)
    method = make_method(job, in_chans)
    optimizer = make_optimizer(job, method)
    policy = build_policy(job.data.augment.model_dump(), job.data.image_size)
    generator = torch.Generator().manual_seed(job.seed)
    steps_per_epoch = len(images) // job.data.batch_size
    total = steps_per_epoch * job.optim.epochs
    warmup = int(job.optim.warmup_epochs * steps_per_epoch)
    started, step, epochs = time.perf_counter(), 0, 0
    while epochs < job.optim.epochs and time.perf_counter() - started < minutes * 60:
        order = torch.randperm(len(images), generator=generator)
        method.train()
        for index in range(steps_per_epoch):
            rows = order[index * job.data.batch_size : (index + 1) * job.data.batch_size]
            view1, view2 = two_views(images[rows], policy, generator)
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine_lr(step, total, warmup, job.optim.lr)
            loss = method(images_to_float({"view1": view1, "view2": view2}))["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        epochs += 1
    elapsed = (time.perf_counter() - started) / 60
    return evaluate_encoder(method, dataset_dir, job), epochs, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", default="jobs/quickstart.yaml")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    job = load_job(args.job)
    try:
        dataset_dir = resolve_dataset(job.data.dataset)
    except ValueError:
        dataset_dir = ingest(job.data.dataset)
    in_chans = load_manifest(dataset_dir)["image_shape"][2]
    train = read_split(dataset_dir, job.data.train_split)[:2]
    test = read_split(dataset_dir, job.data.eval_split)[:2]

    rows = [("raw pixels", raw_pixel_scores(train, test))]
    torch.manual_seed(job.seed)
    random_scores = evaluate_encoder(make_method(job, in_chans), dataset_dir, job)
    rows.append((f"random-init {job.model.backbone}", _short(random_scores)))
    scores, epochs, minutes = plain_simclr(job, dataset_dir, in_chans, args.minutes)
    rows.append((f"plain PyTorch SimCLR loop ({epochs} epochs, {minutes:.1f} min)", _short(scores)))

    print(f"| baseline on {job.data.dataset} | linear probe | kNN (k={job.eval.knn_k}) |")
    print("|---|---|---|")
    for name, result in rows:
        print(f"| {name} | {result['linear_probe']:.1%} | {result['knn']:.1%} |")


def _short(metrics: dict[str, float]) -> dict[str, float]:
    return {"linear_probe": metrics["eval/linear_probe_acc"], "knn": metrics["eval/knn_acc"]}


if __name__ == "__main__":
    main()
