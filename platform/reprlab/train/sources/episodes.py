"""N-way K-shot episodes drawn by each worker from the train split held in memory: the
batches of meta-learners (ProtoNet, MAML, ANIL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from reprlab.config import JobConfig
from reprlab.data.episodes import EpisodeSampler, EpisodeSpec, episode_batch
from reprlab.data.handle import DatasetHandle
from reprlab.distributed import world_info
from reprlab.eval.few_shot import float_episodes
from reprlab.train.sources.base import BatchSource

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


class EpisodeSource(BatchSource):
    """`support` [T, N*K, C, S, S], `query` [T, N*Q, C, S, S] and their labels 0..N-1, for the
    T/W tasks of each step this worker holds (`data.episodes`). Workers read the split's shards
    themselves (episodes need random access by class): a path every node must see, like the
    shards Ray Data reads. Episode i depends on (seed, i) only."""

    preview_artifact = "episodes/train_episode.png"

    def __init__(self, job: JobConfig, dataset: DatasetHandle) -> None:
        super().__init__(job, dataset)
        episodes = job.data.episodes
        if episodes is None:
            raise ValueError(f"method {job.method!r} trains on episodes: data.episodes is unset")
        self.settings = episodes
        self._split: tuple[torch.Tensor, EpisodeSampler] | None = None

    def sampler(self, labels: np.ndarray, seed: int) -> EpisodeSampler:
        """The training episodes over `labels`, drawn with `seed`."""
        settings = self.settings
        return EpisodeSampler(
            labels,
            EpisodeSpec(settings.ways, settings.shots, settings.queries),
            seed,
            where=f"{self.job.data.dataset}/{self.job.data.train_split}",
            rotate_classes=settings.rotate_classes,
        )

    def _train_split(self) -> tuple[torch.Tensor, EpisodeSampler]:
        if self._split is None:
            images, labels = self.dataset.class_images(self.job.data.train_split)
            self._split = images, self.sampler(labels, self.job.seed)
        return self._split

    def steps_per_epoch(self, world: int) -> int:
        return self.settings.steps_per_epoch

    def epoch_batches(self, epoch: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        images, sampler = self._train_split()
        first = epoch * self.settings.steps_per_epoch
        return worker_episode_batches(
            images,
            sampler,
            self.settings.tasks_per_step,
            range(first, first + self.settings.steps_per_epoch),
            self.job.data.image_size,
            device,
        )

    def images_in(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["support"].shape[:2].numel() + batch["query"].shape[:2].numel()

    def preview_figure(self, count: int, seed: int) -> Figure:
        """The first training episode drawn with `seed`, whatever `count` (one episode shows
        the task; `tracking.augment_grid_pairs` sizes augmentation grids)."""
        from reprlab.tracking.figures import episode_figure  # matplotlib: on the driver only

        images, labels = self.dataset.class_images(self.job.data.train_split)
        batch = episode_batch(images, self.sampler(labels, seed), [0])
        s = self.settings
        title = (
            f"{self.job.data.train_split}: {s.ways}-way {s.shots}-shot, "
            f"{s.queries} queries per class"
        )
        return episode_figure(batch, title)
