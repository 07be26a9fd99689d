"""m-per-class batches for metric learning (P classes x m images, one augmented view each),
drawn through a Ray Data stream each worker builds for its own slice of every global batch."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import ray
import torch

from reprlab.augment import ViewPolicy
from reprlab.augment.ops import float_images
from reprlab.config import JobConfig
from reprlab.data.handle import DatasetHandle
from reprlab.data.m_per_class import MPerClassSampler, MPerClassSpec, group_seed, worker_groups
from reprlab.data.pipeline import ingest_options
from reprlab.distributed import world_info
from reprlab.train.sources.base import BatchSource

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def local_views(
    batch: dict[str, np.ndarray],
    *,
    images: np.ndarray,
    labels: np.ndarray,
    sampler: MPerClassSampler,
    policy: ViewPolicy,
    groups: range,
) -> dict[str, np.ndarray]:
    """Ray Data batch of (epoch, index) global-batch ids -> `view1` (uint8 [n, C, S, S]) and
    `label` of the class groups `groups` of each global batch, in order. Each group's views are
    drawn with its own seed (`group_seed`), so they do not depend on the worker count."""
    torch.set_num_threads(1)
    m = sampler.spec.per_class
    views, kept = [], []
    for epoch, index in zip(batch["epoch"], batch["index"], strict=True):
        rows = sampler.batch_rows(int(epoch), int(index))
        for group in groups:
            picked = rows[group * m : (group + 1) * m]
            gen = torch.Generator().manual_seed(
                group_seed(sampler.seed, int(epoch), int(index), group)
            )
            views.append(policy(torch.from_numpy(images[picked]), gen).numpy())
            kept.append(labels[picked])
    return {"view1": np.concatenate(views), "label": np.concatenate(kept)}


class MPerClassSource(BatchSource):
    """`view1` (float [n, C, S, S]) and `label` of this worker's P/W classes of every global
    batch of `data.batch_size` = P x `data.m_per_class` rows of `data.train_split`.

    Each worker builds its own Ray Data stream of its slice rather than taking a shard of one
    driver-built stream: Ray Train's split hands blocks to whichever worker asks first, and a
    loss that mines over the global batch needs every class group on a known worker. A step is
    a global batch; an epoch is the split's rows / batch size steps."""

    probe_keys = ("view1", "label")
    preview_artifact = "augment/m_per_class_batch.png"

    def __init__(self, job: JobConfig, dataset: DatasetHandle) -> None:
        super().__init__(job, dataset)
        if job.data.m_per_class is None:
            raise ValueError(
                f"method {job.method!r} trains on m-per-class batches: set data.m_per_class"
            )
        self.spec = MPerClassSpec(job.data.batch_size // job.data.m_per_class, job.data.m_per_class)

    @property
    def policy(self) -> ViewPolicy:
        return self.job.data.augment.at_size(self.job.data.image_size)

    @cached_property
    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """The train split's uint8 [n, H, W, C] images and labels (read once per process)."""
        return self.dataset.read(self.job.data.train_split)

    def sampler(self, seed: int) -> MPerClassSampler:
        where = f"{self.job.data.dataset}/{self.job.data.train_split}"
        return MPerClassSampler(self.split[1], self.spec, seed, where)

    def steps_per_epoch(self, world: int) -> int:
        return max(1, self.dataset.rows(self.job.data.train_split) // self.spec.size)

    def epoch_views(self, epoch: int, world: int, rank: int) -> ray.data.Dataset:
        """This worker's groups of every global batch of `epoch`, materialised before its first
        step: a stream left running beside the steps keeps Ray Data's executor polling in the
        trainer's own process (the triplet job's first two epochs took 48 and 29 s streamed,
        13 and 16 s materialised)."""
        steps = self.steps_per_epoch(world)
        images, labels = self.split
        cpus = self.job.data.data_cpus / world
        ids = [{"epoch": epoch, "index": index} for index in range(steps)]
        context = ray.data.DataContext.get_current()
        saved, context.execution_options = context.execution_options, ingest_options(cpus)
        try:  # blocks are kept in global-batch order; the process's own options come back after
            return (
                ray.data.from_items(ids)
                .map_batches(
                    local_views,
                    batch_size=max(1, 1024 // self.spec.size),
                    batch_format="numpy",
                    num_cpus=min(1.0, cpus),
                    fn_kwargs={
                        "images": images,
                        "labels": labels,
                        "sampler": self.sampler(self.job.seed),
                        "policy": self.policy,
                        "groups": worker_groups(self.spec, rank, world),
                    },
                )
                .materialize()
            )
        finally:
            context.execution_options = saved

    def epoch_batches(self, epoch: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        """This worker's part of the `steps_per_epoch` global batches of `epoch`."""
        rank, world = world_info()
        batches = self.epoch_views(epoch, world, rank).iter_torch_batches(
            batch_size=self.job.data.batch_size // world, device=device
        )
        return map(float_images, batches)

    def images_in(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["label"].shape[0]

    def preview_figure(self, count: int, seed: int) -> Figure | None:
        """The first global batch drawn with `seed`: its classes as rows, m views each (none
        for count 0)."""
        from reprlab.tracking.figures import class_rows_figure  # matplotlib: on the driver only

        if count == 0:
            return None
        images, labels = self.split
        batch = local_views(
            {"epoch": np.array([0]), "index": np.array([0])},
            images=images,
            labels=labels,
            sampler=self.sampler(seed),
            policy=self.policy,
            groups=range(min(count, self.spec.classes)),
        )
        return class_rows_figure(batch["view1"], batch["label"], self.spec.per_class)
