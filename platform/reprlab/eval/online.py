"""Evaluation during pretraining: an online linear classifier on detached features (as in
solo-learn and the SimCLR code) and a periodic kNN monitor, both on the held-out split.

They are the cheap per-epoch signal a Tune search optimises; the final linear probe and kNN
of eval/ remain the reported numbers."""

from __future__ import annotations

import numpy as np
import ray.train
import torch
import torch.nn.functional as F
from torch import nn

from reprlab.augment.ops import resized, to_float_nchw
from reprlab.data.shards import decode_images
from reprlab.distributed import gather_rows, sum_across_workers
from reprlab.eval.knn import knn_accuracy
from reprlab.eval.retrieval import retrieval_metrics
from reprlab.methods import Method


class TrainingModule(nn.Module):
    """What DDP wraps: the method and, when `num_classes` is given, a linear classifier trained
    on the method's detached features of the batch's `probe_images` with its labelled rows
    (`probe_labels` >= 0). Its gradients never reach the encoder, so the method trains exactly
    as it would alone."""

    def __init__(
        self,
        method: Method,
        num_classes: int | None,
        probe_keys: tuple[str, str] | None = ("view1", "label"),
    ) -> None:
        super().__init__()
        self.method = method
        self.head = None
        if num_classes and probe_keys:
            self.head = nn.Linear(method.backbone.num_features, num_classes)
            self.probe_images, self.probe_labels = probe_keys

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The method's outputs, `objective` (what to back-propagate) and the probe's metrics."""
        output = dict(self.method(batch))
        features = output.pop("features", None)
        if self.head is None:
            return {**output, "objective": output["loss"]}
        if features is None:
            features = self.method.embed(batch[self.probe_images])
        logits = self.head(features.detach()).float()
        labels = batch[self.probe_labels].long()
        labelled = labels >= 0
        count = labelled.sum().clamp(min=1)
        probe_loss = F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum") / count
        correct = ((logits.argmax(dim=1) == labels) & labelled).sum()
        return {
            **output,
            "online_linear_loss": probe_loss.detach(),
            "online_linear_acc": (correct / count).detach(),
            "objective": output["loss"] + probe_loss,
        }


@torch.no_grad()
def _embed_shard(
    module: TrainingModule,
    shard: ray.train.DataIterator,
    shape: tuple[int, int, int],
    image_size: int,
    device: torch.device,
    classified: list[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features (float32, CPU) and labels of this worker's rows of a plain split; with
    `classified`, the rows the method's own classifier gets right are added to its one count."""
    method = module.method
    features, labels = [], []
    for batch in shard.iter_batches(batch_size=512, batch_format="numpy"):
        images, ok = decode_images(batch["image"], shape)
        x = resized(to_float_nchw(torch.from_numpy(images)).to(device), image_size)
        features.append(method.embed(x).float().cpu())
        labels.append(torch.from_numpy(np.asarray(batch["label"])[ok]).long())
        if classified is not None:
            predicted = method.classify(x).argmax(dim=1).cpu()
            classified[0] += float((predicted == labels[-1]).sum())
    if not features:
        return torch.zeros(0, method.backbone.num_features), torch.zeros(0).long()
    return torch.cat(features), torch.cat(labels)


def evaluate_online(
    module: TrainingModule,
    eval_shard: ray.train.DataIterator,
    bank_shard: ray.train.DataIterator | None,
    *,
    shape: tuple[int, int, int],
    image_size: int,
    knn_k: int,
    knn_temperature: float,
    device: torch.device,
    retrieval: bool = False,
) -> dict[str, float]:
    """`online_linear_acc` of the online head, `classifier_acc` of a method that classifies
    and, given a train-split `bank_shard`, `knn_acc`, all on the held-out rows of every worker
    (counts summed across workers); with `retrieval`, `retrieval_precision_at_1` and
    `retrieval_map_at_r` of the held-out rows gathered from every worker."""
    was_training = module.training
    module.eval()
    classified = [0.0] if module.method.classifies else None
    test_x, test_y = _embed_shard(module, eval_shard, shape, image_size, device, classified)
    counts = [float(len(test_y)), *(classified or [])]
    if module.head is not None:
        logits = module.head(test_x.to(device)).float().cpu()
        counts.append(float((logits.argmax(dim=1) == test_y).sum()))
    if bank_shard is not None:
        bank_x, bank_y = _embed_shard(module, bank_shard, shape, image_size, device)
        bank_x, bank_y = gather_rows(bank_x), gather_rows(bank_y)
        correct = 0.0
        if len(test_y):
            accuracy = knn_accuracy(
                bank_x.numpy(),
                bank_y.numpy(),
                test_x.numpy(),
                test_y.numpy(),
                knn_k,
                knn_temperature,
            )
            correct = accuracy * len(test_y)
        counts.append(correct)
    module.train(was_training)
    scores = {}
    if retrieval:
        found = retrieval_metrics(gather_rows(test_x), gather_rows(test_y), ks=(1,))
        scores = {f"retrieval_{key}": found[key] for key in ("precision_at_1", "map_at_r")}
    total, *correct = sum_across_workers(counts, device)
    rates = [count / max(total, 1.0) for count in correct]
    metrics = {}
    if classified is not None:
        metrics["classifier_acc"] = rates.pop(0)
    if module.head is not None:
        metrics["online_linear_acc"] = rates.pop(0)
    if bank_shard is not None:
        metrics["knn_acc"] = rates.pop(0)
    return metrics | scores
