"""Prototypical Networks (Snell et al. 2017): classify each query by the negative squared
Euclidean distance of its embedding to the mean support embedding of every class."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reprlab.methods.base import EpisodicMethod, MethodArgs
from reprlab.models.heads import prototype_logits


class ProtoNet(EpisodicMethod):
    """Encoder only: one forward pass over the episode's support and query images, prototype
    logits, cross-entropy over the query set (mean over tasks)."""

    Args = MethodArgs

    def episode_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[T, N*Q, N] float32 prototype logits of every query image of every task."""
        support, query = batch["support"], batch["query"]
        tasks, shots = support.shape[:2]
        features = self.backbone(torch.cat([support.flatten(0, 1), query.flatten(0, 1)])).float()
        support_features = features[: tasks * shots].unflatten(0, (tasks, shots))
        query_features = features[tasks * shots :].unflatten(0, (tasks, query.shape[1]))
        return prototype_logits(support_features, batch["support_label"], query_features)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.episode_logits(batch)
        labels = batch["query_label"]
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        accuracy = (logits.argmax(-1) == labels).float().mean()
        return {"loss": loss, "query_acc": accuracy.detach()}

    @torch.no_grad()
    def episode_accuracy(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.episode_logits(batch)
        return (logits.argmax(-1) == batch["query_label"]).float().mean(1)
