"""Two augmented views per image, drawn by Ray Data tasks and streamed to the workers: the
batches of every joint-embedding, pretext and supervised method."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING

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


class TwoViewSource(RowCountingSource):
    """`view1`, `view2` (float [B, C, S, S]) and `label` per row of `data.train_split`, plus
    `label_mix`/`mix_weight` when the policy mixes; the global batch is split evenly across
    workers. Views are a function of the job's seed, the epoch and the rows, and every epoch
    comes from one Ray Data stream per worker. With a label subset (a method that trains on
    labels, from few of them), only the labelled rows stream, repeated to fill an epoch of the
    split's length."""

    probe_keys = ("view1", "label")
    preview_artifact = "augment/view_pairs.png"

    def __init__(self, job: JobConfig, dataset: DatasetHandle) -> None:
        super().__init__(job, dataset)
        self._stream: Iterator[dict[str, torch.Tensor]] | None = None

    @property
    def policy(self) -> ViewPolicy:
        return self.job.data.augment.at_size(self.job.data.image_size)

    def ray_datasets(self, first_epoch: Callable[[], int]) -> dict[str, GenDataset]:
        self.start_streams()
        return {"train": partial(self.view_stream, first_epoch)}

    def view_stream(self, first_epoch: Callable[[], int]) -> ray.data.Dataset:
        """The views of every epoch from the one training resumes at to the last, one stream."""
        data = self.job.data
        return view_dataset(
            self.dataset,
            data.train_split,
            self.policy,
            seed=self.job.seed,
            epochs=range(first_epoch(), self.job.optim.epochs),
            counter=self.counter,
            map_batch_size=data.map_batch_size,
            cache=data.cache,
            only=self.labelled_rows(self.dataset.rows(data.train_split)),
        )

    def steps_per_epoch(self, world: int) -> int:
        per_worker = self.job.data.batch_size // world
        return max(1, self.dataset.rows(self.job.data.train_split) // world // per_worker)

    def epoch_batches(self, epoch: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        """The next `steps_per_epoch` batches of this worker's stream: the pass over the rows
        and the step count drift apart by the rows drop_last would leave, as in step-based
        training."""
        world = world_info()[1]
        if self._stream is None:
            batches = ray.train.get_dataset_shard("train").iter_torch_batches(
                batch_size=self.job.data.batch_size // world, device=device, prefetch_batches=2
            )
            self._stream = map(float_images, iter(batches))
        return islice(self._stream, self.steps_per_epoch(world))

    def images_in(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["label"].shape[0]

    def preview_figure(self, count: int, seed: int) -> Figure | None:
        """The first `count` rows of the train split, each with its two views (none for 0)."""
        from reprlab.tracking.figures import view_pairs_figure  # matplotlib: on the driver only

        if count == 0:
            return None
        images, _ = self.dataset.read(self.job.data.train_split)
        originals = images[:count]
        view1, view2 = self.policy.view_pair(
            torch.from_numpy(originals), torch.Generator().manual_seed(seed)
        )
        return view_pairs_figure(
            originals, view1.permute(0, 2, 3, 1).numpy(), view2.permute(0, 2, 3, 1).numpy()
        )
