"""The one Ray Train worker loop, shared by every method: devices, AMP, DDP, schedules,
gradient clipping, checkpoints, resume and metric reporting live here, objectives do not."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from reprlab.config import JobConfig
from reprlab.data.episodes import (
    EpisodeSampler,
    EpisodeSpec,
    episode_batch,
    images_in,
    split_images,
)
from reprlab.data.pipeline import bad_row_counter
from reprlab.eval.few_shot import fewshot_metrics, float_episodes
from reprlab.methods import Method, method_class
from reprlab.methods.distributed import average_gradients, world_info
from reprlab.models.backbones import build_backbone
from reprlab.models.norm import global_batch_norm
from reprlab.tracking.mlflow import RankZeroLogger
from reprlab.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from reprlab.train.lars import LARS
from reprlab.train.online import TrainingModule, evaluate_online

ONLINE_METRICS = ("online_linear_acc", "knn_acc")


def make_method(job: JobConfig, in_chans: int) -> Method:
    """The job's method around a freshly initialised backbone."""
    backbone_args = {"width": job.model.width} if job.model.width else {}
    backbone = build_backbone(
        job.model.backbone,
        in_chans,
        image_size=job.data.image_size,
        patch_size=job.model.patch_size,
        **backbone_args,
    )
    return method_class(job.method)(backbone, job.parsed_method_args())


def make_training_module(job: JobConfig, in_chans: int, num_classes: int) -> TrainingModule:
    """The job's method plus its online linear classifier when `eval.online_linear` is on."""
    return TrainingModule(
        make_method(job, in_chans), num_classes if job.eval.online_linear else None
    )


def make_optimizer(job: JobConfig, module: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW, SGD or LARS over all trainable parameters; no weight decay on norms and biases. The
    online classifier (`head`, when there is one) gets its own group at `eval.online_linear_lr`
    without decay, as solo-learn's does, so the monitor is useful from the first epochs."""
    head = getattr(module, "head", None)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    decay, no_decay = [], []
    for parameter in module.parameters():
        if parameter.requires_grad and id(parameter) not in head_ids:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": job.optim.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    if head is not None:
        scale = job.eval.online_linear_lr / job.optim.lr
        groups.append({"params": list(head.parameters()), "weight_decay": 0.0, "lr_scale": scale})
    optim = job.optim
    if optim.optimizer == "lars":
        for group in groups[1:]:
            group["lars"] = False  # biases, norms and the online head: plain SGD steps
        return LARS(groups, lr=optim.lr, momentum=optim.momentum, eta=optim.lars_eta)
    if optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas)


def warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up from ~0 to base_lr, then cosine decay to 0 at total_steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def images_to_float(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """uint8 image tensors -> float in [0, 1]; other entries unchanged."""
    return {
        key: value.float().div_(255) if value.dtype == torch.uint8 else value
        for key, value in batch.items()
    }


def _sum_across_workers(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def worker_episode_batches(
    images: torch.Tensor,
    sampler: EpisodeSampler,
    tasks_per_step: int,
    steps: range,
    image_size: int,
    device: torch.device,
) -> Iterator[dict[str, torch.Tensor]]:
    """This worker's tasks of each step: global task ids step * tasks_per_step + [0, T) split in
    rank order, so W workers x T/W tasks hold the same episodes as 1 worker x T."""
    rank, world = world_info()
    local = tasks_per_step // world
    for step in steps:
        first = step * tasks_per_step + rank * local
        tasks = list(range(first, first + local))
        yield float_episodes(episode_batch(images, sampler, tasks), image_size, device)


@dataclass
class FewShotSplit:
    """A split few-shot evaluation scores, held in memory: `episodes` of it after every epoch
    (val) or after the last one only (test)."""

    name: str
    images: torch.Tensor
    labels: np.ndarray
    episodes: int
    every_epoch: bool


def _fewshot_splits(job: JobConfig, dataset_dir: str) -> list[FewShotSplit]:
    """data.eval_split ("val", when val_episodes) and eval.fewshot.split ("test")."""
    fewshot = job.eval.fewshot
    if fewshot is None:
        return []
    splits = [("test", fewshot.split, fewshot.episodes, False)]
    if fewshot.val_episodes:
        splits.append(("val", job.data.eval_split, fewshot.val_episodes, True))
    return [
        FewShotSplit(name, *split_images(Path(dataset_dir), split), episodes, every_epoch)
        for name, split, episodes, every_epoch in splits
    ]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train `config["job"]` on this worker's shard of the "train" dataset (or on its share of
    each step's episodes); report and checkpoint every epoch; resume from the latest checkpoint
    when one exists."""
    job = JobConfig.model_validate(config["job"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(job.seed + rank)
    if not job.scaling.use_gpu:
        torch.set_num_threads(job.scaling.torch_threads)
    device = ray.train.torch.get_device()

    module = make_training_module(job, config["in_chans"], config["num_classes"])
    method = module.method
    optimizer = make_optimizer(job, module)
    state = TrainState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(Path(directory), module, optimizer)
    if world > 1 and job.model.global_bn:
        global_batch_norm(module, job.scaling.use_gpu)
    model = ray.train.torch.prepare_model(module, parallel_strategy="ddp" if method.ddp else None)
    trainable = [p for p in module.parameters() if p.requires_grad]

    episodes = job.data.episodes
    if episodes is not None:
        train_images, train_labels = split_images(Path(config["dataset_dir"]), job.data.train_split)
        sampler = EpisodeSampler(
            train_labels,
            EpisodeSpec(episodes.ways, episodes.shots, episodes.queries),
            job.seed,
            where=f"{job.data.dataset}/{job.data.train_split}",
            rotate_classes=episodes.rotate_classes,
        )
        steps_per_epoch = episodes.steps_per_epoch
    else:
        per_worker_batch = job.data.batch_size // world
        steps_per_epoch = max(1, config["train_rows"] // world // per_worker_batch)
        shard = ray.train.get_dataset_shard("train")
    total_steps = steps_per_epoch * job.optim.epochs
    warmup_steps = int(job.optim.warmup_epochs * steps_per_epoch)
    eval_shard = ray.train.get_dataset_shard("eval") if "eval" in config["datasets"] else None
    bank_shard = ray.train.get_dataset_shard("bank") if "bank" in config["datasets"] else None
    fewshot_splits = _fewshot_splits(job, config["dataset_dir"])
    logger = RankZeroLogger(config.get("run_id"), config["tracking_uri"], rank)
    counter = bad_row_counter(config["counter_name"]) if rank == 0 else None
    bad_rows_before = ray.get(counter.value.remote()) if counter else 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=job.scaling.use_gpu)

    for epoch in range(state.epoch, job.optim.epochs):
        started = time.perf_counter()
        sums: dict[str, float] = {}
        images, steps = 0, 0
        lr = job.optim.lr
        if episodes is not None:
            first_step = epoch * steps_per_epoch
            batches = worker_episode_batches(
                train_images,
                sampler,
                episodes.tasks_per_step,
                range(first_step, first_step + steps_per_epoch),
                job.data.image_size,
                device,
            )
        else:
            batches = shard.iter_torch_batches(
                batch_size=per_worker_batch, drop_last=True, device=device, prefetch_batches=2
            )
        for batch in batches:
            lr = warmup_cosine_lr(state.step, total_steps, warmup_steps, job.optim.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            with autocast:
                output = model(images_to_float(batch))
            optimizer.zero_grad(set_to_none=True)
            output.pop("objective").backward()
            if not method.ddp:
                average_gradients(trainable)
            if job.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), job.optim.grad_clip)
            optimizer.step()
            method.on_step_end(state.step, total_steps)
            state.step += 1
            steps += 1
            for key, value in output.items():
                sums[key] = sums.get(key, 0.0) + value.item()
            images += images_in(batch)
        *totals, images, steps = _sum_across_workers([*sums.values(), images, steps], device)
        elapsed = time.perf_counter() - started
        state.epoch = epoch + 1
        metrics = {
            "epoch": state.epoch,
            **{
                f"train/{key}": total / max(steps, 1)
                for key, total in zip(sums, totals, strict=True)
            },
            "train/lr": lr,
            "train/images_per_s": images / elapsed,
            "train/epoch_time_s": elapsed,
        }
        if eval_shard is not None:
            knn_due = bank_shard is not None and state.epoch % job.eval.knn_every == 0
            metrics |= evaluate_online(
                module,
                eval_shard,
                bank_shard if knn_due else None,
                shape=tuple(config["image_shape"]),
                image_size=job.data.image_size,
                knn_k=job.eval.knn_k,
                knn_temperature=job.eval.knn_temperature,
                device=device,
            )
        for split in fewshot_splits:
            if split.every_epoch or state.epoch == job.optim.epochs:
                metrics |= fewshot_metrics(
                    method,
                    split.images,
                    split.labels,
                    job.eval.fewshot,
                    split.name,
                    split.episodes,
                    job.data.image_size,
                    device,
                )
        if counter is not None:
            bad_rows_total = ray.get(counter.value.remote())
            metrics["data/bad_rows"] = bad_rows_total - bad_rows_before
            bad_rows_before = bad_rows_total
        _report(metrics, module, optimizer, state, rank)
        logger.log(metrics, step=state.epoch)
        if rank == 0:
            shown = [key for key in metrics if key in ONLINE_METRICS or key.endswith("shot_acc")]
            print(
                f"[reprlab] epoch {state.epoch}/{job.optim.epochs} "
                f"loss {metrics['train/loss']:.4f} lr {lr:.2e} "
                f"{metrics['train/images_per_s']:.0f} img/s {elapsed:.1f}s"
                + "".join(f" {key} {metrics[key]:.3f}" for key in shown),
                flush=True,
            )


def _report(
    metrics: dict[str, float],
    module: TrainingModule,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    rank: int,
) -> None:
    """Every rank reports (it is a barrier); rank 0 attaches the checkpoint."""
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            save_checkpoint(Path(directory), module, optimizer, state)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)
