"""Labelled and unlabelled images in every step, two Ray Data streams: the batches of the
semi-supervised methods (FixMatch and kin), learning from a few labels and many images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import ray
import ray.train
import torch

from reprlab.augment import ViewPolicy
from reprlab.augment.ops import float_images
from reprlab.config import JobConfig
from reprlab.data.handle import DatasetHandle
from reprlab.data.pipeline import view_dataset
from reprlab.distributed import world_info
from reprlab.train.sources.base import GenDataset, RowCountingSource

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class LabelledUnlabelledSource(RowCountingSource):
    """Per step, B = `data.batch_size` labelled images (`labelled`, weak view by
    `data.augment`, with `label`) and mu*B unlabelled ones (mu = `data.unlabelled_ratio`) as
    `unlabelled_weak` (`data.augment`) and `unlabelled_strong` (`data.strong_augment`) views of
    the same images; both split evenly across workers.

    The labelled rows are the job's seeded, stratified subset (`data.labels_per_class` or
    `data.label_fraction`; every row when neither is set), repeated to fill an epoch's steps.
    The unlabelled stream is every train row with its label set to -1 in the Ray Data task and
    left out of the batch: a method cannot see it. An epoch is one pass over the unlabelled
    rows."""

    probe_keys = ("labelled", "label")
    preview_artifact = "augment/weak_strong_pairs.png"

    def __init__(self, job: JobConfig, dataset: DatasetHandle) -> None:
        super().__init__(job, dataset)
        self._streams: tuple[Iterator, Iterator] | None = None

    @property
    def weak(self) -> ViewPolicy:
        return self.job.data.augment.at_size(self.job.data.image_size)

    @property
    def strong(self) -> ViewPolicy:
        return self.job.data.strong_augment.at_size(self.job.data.image_size)

    @property
    def unlabelled_batch(self) -> int:
        return self.job.data.batch_size * self.job.data.unlabelled_ratio

    def ray_datasets(self, first_epoch: Callable[[], int]) -> dict[str, GenDataset]:
        self.start_streams()
        return {
            "labelled": partial(self._stream, first_epoch, labelled=True),
            "unlabelled": partial(self._stream, first_epoch, labelled=False),
        }

    def _stream(self, first_epoch: Callable[[], int], *, labelled: bool) -> ray.data.Dataset:
        data = self.job.data
        steps = self.steps_per_epoch(1)
        only = self.labelled_rows(steps * data.batch_size) if labelled else None
        return view_dataset(
            self.dataset,
            data.train_split,
            self.weak,
            second=None if labelled else self.strong,
            hide_labels=not labelled,
            only=only,
            seed=self.job.seed if labelled else self.job.seed + 1,
            epochs=range(first_epoch(), self.job.optim.epochs),
            counter=self.counter,
            map_batch_size=data.map_batch_size,
            cache=data.cache,
        )

    def steps_per_epoch(self, world: int) -> int:
        per_worker = self.unlabelled_batch // world
        return max(1, self.dataset.rows(self.job.data.train_split) // world // per_worker)

    def epoch_batches(self, epoch: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        """The next `steps_per_epoch` steps of this worker's two streams."""
        world = world_info()[1]
        if self._streams is None:
            self._streams = tuple(
                map(
                    float_images,
                    ray.train.get_dataset_shard(name).iter_torch_batches(
                        batch_size=size // world, device=device, prefetch_batches=2
                    ),
                )
                for name, size in (
                    ("labelled", self.job.data.batch_size),
                    ("unlabelled", self.unlabelled_batch),
                )
            )
        labelled, unlabelled = self._streams
        for _ in range(self.steps_per_epoch(world)):
            rows, views = next(labelled), next(unlabelled)
            yield {
                "labelled": rows["view1"],
                "label": rows["label"],
                "unlabelled_weak": views["view1"],
                "unlabelled_strong": views["view2"],
            }

    def images_in(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["label"].shape[0] + 2 * batch["unlabelled_weak"].shape[0]

    def preview_figure(self, count: int, seed: int) -> Figure | None:
        """The first `count` train rows, each with its weak and its strong view."""
        from reprlab.tracking.figures import view_pairs_figure  # matplotlib: on the driver only

        if count == 0:
            return None
        images, _ = self.dataset.read(self.job.data.train_split)
        originals = torch.from_numpy(np.ascontiguousarray(images[:count]))
        gen = torch.Generator().manual_seed(seed)
        weak, strong = self.weak(originals, gen), self.strong(originals, gen)
        return view_pairs_figure(
            originals.numpy(), weak.permute(0, 2, 3, 1).numpy(), strong.permute(0, 2, 3, 1).numpy()
        )
