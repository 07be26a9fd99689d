"""The one Ray Train worker loop, shared by every method and every batch source: devices, AMP,
DDP, schedules, gradient clipping, checkpoints, resume and metric reporting live here;
objectives (methods/) and what a step consumes (train/sources/) do not."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from reprlab.config import JobConfig
from reprlab.distributed import average_gradients, sum_across_workers, world_info
from reprlab.eval.online import TrainingModule
from reprlab.models.norm import global_batch_norm
from reprlab.train.build import StartingPoint, make_training_module
from reprlab.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from reprlab.train.monitors import EpochMonitors
from reprlab.train.optim import make_optimizer, set_lr, warmup_cosine_lr
from reprlab.train.sources import BatchSource
from reprlab.train.worker_session import TrainSession

PROGRESS_EVERY = 5
"""Steps between two progress updates sent to the driver's display."""


@dataclass
class WorkerPlan:
    """Everything a Train worker needs, built on the driver: the job, its batch source and
    monitors, the dataset's channels and classes, the driver's progress board (when there is
    one); what runs the loop and receives its epochs (Ray Train, or a single-process Tune trial),
    values reported with every epoch (a PBT trial's schedule) and what training starts from
    (`model.init_from`'s encoder, `model.teacher`)."""

    job: JobConfig
    source: BatchSource
    monitors: EpochMonitors
    in_chans: int
    num_classes: int
    progress: ray.actor.ActorHandle | None = None
    session: TrainSession = field(default_factory=TrainSession)
    epoch_constants: dict[str, float] = field(default_factory=dict)
    start: StartingPoint = field(default_factory=StartingPoint)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train `config["plan"]` (a WorkerPlan) on this worker's batches; report and checkpoint
    every epoch; resume from the latest checkpoint when one exists."""
    plan: WorkerPlan = config["plan"]
    job, source = plan.job, plan.source
    session = plan.session
    rank = session.rank()
    torch.manual_seed(job.seed + rank)
    if not job.scaling.use_gpu:
        torch.set_num_threads(job.scaling.torch_threads)
    device = session.device()

    module = make_training_module(
        job, plan.in_chans, plan.num_classes, source.probe_keys, plan.start
    )
    method = module.method
    optimizer = make_optimizer(job, module)
    state = TrainState()
    checkpoint = session.checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(Path(directory), module, optimizer)
        session.restored(module, state.epoch)
    world = world_info()[1]
    nodes = session.nodes()
    if world > 1 and job.model.global_bn:
        global_batch_norm(module, job.scaling.use_gpu)
    model = session.prepare_model(module, method.ddp)
    trainable = [p for p in module.parameters() if p.requires_grad]

    steps_per_epoch = source.steps_per_epoch(world)
    total_steps = steps_per_epoch * job.optim.epochs
    warmup_steps = int(job.optim.warmup_epochs * steps_per_epoch)
    progress = plan.progress if rank == 0 else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=job.scaling.use_gpu)

    for epoch in range(state.epoch, job.optim.epochs):
        started = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        images = steps = 0
        lr = job.optim.lr
        for batch in source.epoch_batches(epoch, device):
            lr = warmup_cosine_lr(state.step, total_steps, warmup_steps, job.optim.lr)
            set_lr(optimizer, lr)
            with autocast:
                output = model(batch)
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
            images += source.images_in(batch)
            for key, value in output.items():  # summed on the device: no sync per step
                sums[key] = sums[key] + value.detach() if key in sums else value.detach()
            if progress is not None and steps % PROGRESS_EVERY == 0:
                progress.step.remote(epoch, steps, steps_per_epoch, float(output["loss"].detach()))
        local = torch.stack(list(sums.values())).double().tolist() if sums else []
        *totals, images, steps = sum_across_workers([*local, images, steps], device)
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
            "train/workers": world,
            "train/nodes": nodes,
        }
        metrics |= plan.monitors.metrics(state.epoch, module, device) | plan.epoch_constants
        if rank == 0:
            metrics |= source.epoch_metrics()
        _report(session, metrics, module, optimizer, state, rank)
        if progress is not None:
            progress.epoch_end.remote(metrics)


def _report(
    session: TrainSession,
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
        session.report(metrics, checkpoint)
