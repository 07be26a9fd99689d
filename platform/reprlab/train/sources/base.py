"""The batch-source contract: what a training step consumes, behind one small interface.

A source is built on the driver from the job and its dataset handle, creates the Ray datasets
(and any helper actor) it needs there, then travels to every Train worker, where it yields that
worker's float batches for an epoch. The loop and the trainer only ever call these methods, so a
new way to feed a step (labelled + unlabelled streams, fine-tuning) is a new source, not a
branch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ClassVar

import ray
import torch

from reprlab.config import JobConfig
from reprlab.data.handle import DatasetHandle

if TYPE_CHECKING:  # only the driver draws: Train workers skip importing matplotlib
    from matplotlib.figure import Figure

GenDataset = ray.data.Dataset | Callable[[], ray.data.Dataset]


class BatchSource(ABC):
    """One kind of training batch. `probe_keys` names the (images, labels) entries the online
    classifier reads, or None when a batch has no per-image labels."""

    probe_keys: ClassVar[tuple[str, str] | None] = None
    preview_artifact: ClassVar[str]
    """Where the preview figure goes in the MLflow run."""

    def __init__(self, job: JobConfig, dataset: DatasetHandle) -> None:
        self.job = job
        self.dataset = dataset

    def ray_datasets(self, first_epoch: Callable[[], int]) -> dict[str, GenDataset]:
        """On the driver, with Ray up: the datasets the trainer hands to the workers, or
        factories Ray Train calls each time it starts the worker group (a stream that depends
        on where training resumes asks `first_epoch` then)."""
        return {}

    def close(self) -> None:  # noqa: B027 - most sources start nothing to release
        """On the driver after training: release what `ray_datasets` started."""

    @abstractmethod
    def steps_per_epoch(self, world: int) -> int:
        """Optimiser steps in one epoch with `world` workers."""

    @abstractmethod
    def epoch_batches(self, epoch: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        """On a worker: this worker's batches of `epoch`, float images in [0, 1] on `device`."""

    @abstractmethod
    def images_in(self, batch: dict[str, torch.Tensor]) -> int:
        """Images one batch holds (for images/s)."""

    def epoch_metrics(self) -> dict[str, float]:
        """On world rank 0 after an epoch: the source's own metrics (e.g. rows skipped)."""
        return {}

    @abstractmethod
    def preview_figure(self, count: int, seed: int) -> Figure | None:
        """A picture of what training sees, drawn with `seed` (`count` examples where the
        source shows examples; None when it has nothing to show for `count`)."""
