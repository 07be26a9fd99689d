"""The worker loop's link to what runs it: its rank, its device, how its model is wrapped,
where each epoch's metrics and checkpoint go and where the checkpoint to resume from comes
from. Ray Train for every run; a single-process Tune trial (tune/trial.py) runs the same loop
through its own session, as Ray's Train API refuses to be called inside a Tune trial."""

from __future__ import annotations

import ray.train
import ray.train.torch
import torch

from reprlab.distributed import gather_objects, world_info
from reprlab.storage import epoch_to_resume


class TrainSession:
    """A Ray Train worker: rank and device from Train, DDP where the method wants it, every
    rank reports (a barrier), Train persists rank 0's checkpoint in the run's storage (and the
    driver's EpochLogger records the epoch only then), and a relaunched or restarted worker
    group resumes from the newest checkpoint there."""

    def rank(self) -> int:
        return ray.train.get_context().get_world_rank()

    def device(self) -> torch.device:
        return ray.train.torch.get_device()

    def nodes(self) -> int:
        """How many Ray nodes the worker group spans (collective: every rank calls it). One
        worker spans one; asking Ray then would start it under an in-process run."""
        if world_info()[1] == 1:
            return 1
        return len(set(gather_objects(ray.get_runtime_context().get_node_id())))

    def prepare_model(self, module: torch.nn.Module, ddp: bool) -> torch.nn.Module:
        return ray.train.torch.prepare_model(module, parallel_strategy="ddp" if ddp else None)

    def checkpoint(self) -> ray.train.Checkpoint | None:
        return ray.train.get_checkpoint()

    def report(self, metrics: dict[str, float], checkpoint: ray.train.Checkpoint | None) -> None:
        ray.train.report(metrics, checkpoint=checkpoint)

    def restored(self, module: torch.nn.Module, epoch: int) -> None:
        """Called after the loop loaded a checkpoint's weights into `module`."""

    def first_epoch(self, checkpoints: str) -> int:
        """The epoch training starts at: the newest checkpoint's among the run's `checkpoints`
        (a folder or URI)."""
        return epoch_to_resume(checkpoints)
