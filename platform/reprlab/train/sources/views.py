"""Two augmented views per image, drawn by Ray Data tasks and streamed to the workers: the
batches of every joint-embedding, pretext and supervised method."""

from __future__ import annotations

from collections.abc import Iterator

import ray
import ray.train
import torch
from matplotlib.figure import Figure

from reprlab.augment import ViewPolicy
from reprlab.augment.ops import float_images
from reprlab.config import JobConfig
from reprlab.data.handle import DatasetHandle
from reprlab.data.pipeline import PipelineState, view_dataset
from reprlab.distributed import world_info
from reprlab.tracking.figures import view_pairs_figure
from reprlab.train.sources.base import BatchSource


class TwoViewSource(BatchSource):
    """`view1`, `view2` (float [B, C, S, S]) and `label` per row of `data.train_split`, plus
    `label_mix`/`mix_weight` when the policy mixes; the global batch is split evenly across
    workers. Views are a function of the job's seed, the epoch and the rows."""

    probe_keys = ("view1", "label")
    preview_artifact = "augment/view_pairs.png"

    def __init__(self, job: JobConfig, dataset: DatasetHandle) -> None:
        super().__init__(job, dataset)
        self.state: ray.actor.ActorHandle | None = None
        self._bad_rows_reported = 0

    @property
    def policy(self) -> ViewPolicy:
        return self.job.data.augment.at_size(self.job.data.image_size)

    def ray_datasets(self) -> dict[str, ray.data.Dataset]:
        data = self.job.data
        self.state = PipelineState.remote()
        train = view_dataset(
            self.dataset,
            data.train_split,
            self.policy,
            seed=self.job.seed,
            state=self.state,
            map_batch_size=data.map_batch_size,
            cache=data.cache,
        )
        return {"train": train}

    def close(self) -> None:
        if self.state is not None:
            ray.kill(self.state)
            self.state = None

    def steps_per_epoch(self, world: int) -> int:
        per_worker = self.job.data.batch_size // world
        return max(1, self.dataset.rows(self.job.data.train_split) // world // per_worker)

    def epoch_batches(self, epoch: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        if self.state is not None:
            ray.get(self.state.begin_epoch.remote(epoch))
        shard = ray.train.get_dataset_shard("train")
        batches = shard.iter_torch_batches(
            batch_size=self.job.data.batch_size // world_info()[1],
            drop_last=True,
            device=device,
            prefetch_batches=2,
        )
        return map(float_images, batches)

    def images_in(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["label"].shape[0]

    def epoch_metrics(self) -> dict[str, float]:
        if self.state is None:
            return {}
        total = ray.get(self.state.bad_row_count.remote())
        skipped, self._bad_rows_reported = total - self._bad_rows_reported, total
        return {"data/bad_rows": skipped}

    def preview_figure(self, count: int, seed: int) -> Figure:
        """The first `count` rows of the train split, each with its two views."""
        images, _ = self.dataset.read(self.job.data.train_split)
        originals = images[:count]
        view1, view2 = self.policy.view_pair(
            torch.from_numpy(originals), torch.Generator().manual_seed(seed)
        )
        return view_pairs_figure(
            originals, view1.permute(0, 2, 3, 1).numpy(), view2.permute(0, 2, 3, 1).numpy()
        )
