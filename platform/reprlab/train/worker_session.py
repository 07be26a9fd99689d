"""The worker loop's link to what runs it: its rank, its device, how its model is wrapped,
where each epoch's metrics and checkpoint go and where the checkpoint to resume from comes
from. Ray Train for every run; a single-process Tune trial (tune/trial.py) runs the same loop
through its own session, as Ray's Train API refuses to be called inside a Tune trial."""

from __future__ import annotations

from pathlib import Path

import ray.train
import ray.train.torch
import torch

from reprlab.train.checkpoint import epoch_to_resume


class TrainSession:
    """A Ray Train worker: rank and device from Train, DDP where the method wants it, every
    rank reports (a barrier), Train persists rank 0's checkpoint in the run folder, and a
    relaunched run resumes from the newest one there."""

    def rank(self) -> int:
        return ray.train.get_context().get_world_rank()

    def device(self) -> torch.device:
        return ray.train.torch.get_device()

    def prepare_model(self, module: torch.nn.Module, ddp: bool) -> torch.nn.Module:
        return ray.train.torch.prepare_model(module, parallel_strategy="ddp" if ddp else None)

    def checkpoint(self) -> ray.train.Checkpoint | None:
        return ray.train.get_checkpoint()

    def report(self, metrics: dict[str, float], checkpoint: ray.train.Checkpoint | None) -> None:
        ray.train.report(metrics, checkpoint=checkpoint)

    def restored(self, module: torch.nn.Module, epoch: int) -> None:
        """Called after the loop loaded a checkpoint's weights into `module`."""

    def first_epoch(self, storage: Path) -> int:
        """The epoch training starts at: the newest checkpoint's in the run folder `storage`."""
        return epoch_to_resume(storage)
