"""The batch-source contract: what a training step consumes, behind one small interface.

A source is built on the driver from the job and its dataset handle, creates the Ray datasets
(and any helper actor) it needs there, then travels to every Train worker, where it yields that
worker's float batches for an epoch. The loop and the trainer only ever call these methods, so a
new way to feed a step (labelled + unlabelled streams, fine-tuning) is a new source, not a
branch."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

import ray
import torch

from reprlab.config import JobConfig
from reprlab.data.handle import DatasetHandle
from reprlab.data.label_subsets import LabelSubset, label_subset
from reprlab.data.pipeline import RowCounter, RowSelection
from reprlab.driver_actors import on_driver_node

if TYPE_CHECKING:  # only the driver draws: Train workers skip importing matplotlib
    from matplotlib.figure import Figure

GenDataset = ray.data.Dataset | Callable[[], ray.data.Dataset]
LABELLED_ROWS_ARTIFACT = "data/labelled_rows.csv"


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

    @cached_property
    def subset(self) -> LabelSubset | None:
        """On the driver: the labelled rows, or None when every row keeps its label."""
        data = self.job.data
        if not data.label_subset_asked:
            return None
        images, labels = self.dataset.read(data.train_split)
        return label_subset(
            images,
            labels,
            self.job.seed,
            per_class=data.labels_per_class,
            fraction=data.label_fraction,
        )

    def run_params(self) -> dict[str, str]:
        """On the driver: what the run records as params about its labels (count, digest)."""
        if self.subset is None:
            return {}
        return {
            "data.labelled_rows": str(len(self.subset)),
            "data.label_subset_digest": self.subset.digest,
        }

    def run_files(self) -> dict[str, str]:
        """On the driver: text artifacts (path in the run -> content): the labelled rows."""
        if self.subset is None:
            return {}
        _, labels = self.dataset.read(self.job.data.train_split)
        lines = ["position,pixel_crc32,label"] + [
            f"{position},{key},{labels[position]}"
            for position, key in zip(self.subset.positions, self.subset.keys, strict=True)
        ]
        return {LABELLED_ROWS_ARTIFACT: "\n".join(lines) + "\n"}

    def labelled_rows(self, rows_per_epoch: int) -> RowSelection | None:
        """The stream selection of the labelled rows, repeated to give at least
        `rows_per_epoch` rows an epoch; None when every row is labelled."""
        if self.subset is None:
            return None
        return RowSelection(self.subset.keys, math.ceil(rows_per_epoch / len(self.subset)))

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


class RowCountingSource(BatchSource):
    """A source whose Ray Data tasks skip corrupt rows and count them in a `RowCounter` actor
    on the driver's node, started by `start_streams` (in `ray_datasets`) and ended in `close`."""

    def __init__(self, job: JobConfig, dataset: DatasetHandle) -> None:
        super().__init__(job, dataset)
        self.counter: ray.actor.ActorHandle | None = None

    def start_streams(self) -> None:
        """On the driver, before the streams exist: choose the label subset (it travels with
        the source) and start the row counter."""
        _ = self.subset
        self.counter = RowCounter.options(scheduling_strategy=on_driver_node()).remote()

    def close(self) -> None:
        if self.counter is not None:
            ray.kill(self.counter)
            self.counter = None

    def epoch_metrics(self) -> dict[str, float]:
        """`data/bad_rows`: rows skipped as corrupt so far (the streams run ahead of the steps,
        so a per-epoch count would be a guess)."""
        if self.counter is None:
            return {}
        return {"data/bad_rows": ray.get(self.counter.value.remote())}
