"""What the loop measures after each epoch besides the loss: the online linear classifier, kNN
and retrieval on the held-out split, and few-shot accuracy on fixed episodes. Built on the
driver (the Ray datasets they read), evaluated on every worker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray
import ray.train
import torch

from reprlab.config import JobConfig
from reprlab.data.handle import DatasetHandle
from reprlab.data.pipeline import row_dataset
from reprlab.eval.few_shot import fewshot_metrics
from reprlab.eval.online import TrainingModule, evaluate_online
from reprlab.methods import method_class


@dataclass
class FewShotSplit:
    """A split few-shot evaluation scores: `episodes` of it after every epoch (val) or after
    the last one only (test)."""

    name: str
    split: str
    episodes: int
    every_epoch: bool


class EpochMonitors:
    """The job's per-epoch evaluations. `metrics` is called by every worker (it gathers)."""

    def __init__(self, job: JobConfig, dataset: DatasetHandle) -> None:
        self.job = job
        self.dataset = dataset
        self.online = (
            job.eval.online_linear
            or bool(job.eval.knn_every)
            or bool(job.eval.retrieval_every)
            or method_class(job.method).classifies
        )
        fewshot = job.eval.fewshot
        self.fewshot_splits = []
        if fewshot is not None:
            self.fewshot_splits.append(FewShotSplit("test", fewshot.split, fewshot.episodes, False))
            if fewshot.val_episodes:
                self.fewshot_splits.append(
                    FewShotSplit("val", job.data.eval_split, fewshot.val_episodes, True)
                )
        self._images: dict[str, tuple[torch.Tensor, np.ndarray]] = {}

    def ray_datasets(self) -> dict[str, ray.data.Dataset]:
        """Plain held-out rows ("eval") and train rows ("bank", for kNN), read once."""
        datasets = {}
        if self.online:
            datasets["eval"] = row_dataset(self.dataset, self.job.data.eval_split)
        if self.job.eval.knn_every:
            datasets["bank"] = row_dataset(self.dataset, self.job.data.train_split)
        return datasets

    def metrics(self, epoch: int, module: TrainingModule, device: torch.device) -> dict[str, float]:
        """The evaluations due after `epoch` (1-based) epochs."""
        job = self.job
        metrics: dict[str, float] = {}
        if self.online:
            knn_due = bool(job.eval.knn_every) and epoch % job.eval.knn_every == 0
            every = job.eval.retrieval_every
            metrics |= evaluate_online(
                module,
                ray.train.get_dataset_shard("eval"),
                ray.train.get_dataset_shard("bank") if knn_due else None,
                shape=self.dataset.image_shape,
                image_size=job.data.image_size,
                knn_k=job.eval.knn_k,
                knn_temperature=job.eval.knn_temperature,
                device=device,
                retrieval=bool(every) and epoch % every == 0,
            )
        for split in self.fewshot_splits:
            if split.every_epoch or epoch == job.optim.epochs:
                images, labels = self._split_images(split.split)
                metrics |= fewshot_metrics(
                    module.method,
                    images,
                    labels,
                    job.eval.fewshot,
                    split.name,
                    split.episodes,
                    job.data.image_size,
                    device,
                )
        return metrics

    def _split_images(self, split: str) -> tuple[torch.Tensor, np.ndarray]:
        if split not in self._images:
            self._images[split] = self.dataset.class_images(split)
        return self._images[split]
