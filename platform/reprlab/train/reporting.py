"""Where the worker loop sends each epoch's metrics and checkpoint, and where it finds the one
to resume from: Ray Train (every run) or, for a single-process Tune trial, Ray Tune itself."""

from __future__ import annotations

from pathlib import Path

import ray.train
import torch

from reprlab.train.checkpoint import epoch_to_resume


class TrainReporter:
    """Ray Train's session: every rank reports (a barrier); Train persists rank 0's checkpoint
    in the run folder, and a relaunched run resumes from the newest one there."""

    def checkpoint(self) -> ray.train.Checkpoint | None:
        return ray.train.get_checkpoint()

    def report(self, metrics: dict[str, float], checkpoint: ray.train.Checkpoint | None) -> None:
        ray.train.report(metrics, checkpoint=checkpoint)

    def restored(self, module: torch.nn.Module, epoch: int) -> None:
        """Called after the loop loaded a checkpoint's weights into `module`."""

    def first_epoch(self, storage: Path) -> int:
        """The epoch training starts at: the newest checkpoint's in the run folder `storage`."""
        return epoch_to_resume(storage)
