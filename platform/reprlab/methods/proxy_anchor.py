"""Proxy Anchor loss (Kim et al. 2020): one learnable proxy per class is the anchor; it pulls
the batch's images of its class and pushes the others, each weighted by its hardness."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.methods.metric_base import (
    ClassVectorArgs,
    LossOutput,
    MetricLearningMethod,
    class_vector_accuracy,
    log1p_sum_exp,
)


def proxy_anchor_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    proxies: torch.Tensor,
    alpha: float = 32.0,
    delta: float = 0.1,
) -> LossOutput:
    """1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x,p) - delta))) +
    1/|P| sum_{p in P} log(1 + sum_{x in X_p-} exp(alpha (s(x,p) + delta))), s the cosine, P all
    proxies ([C, D], labels in 0..C-1), P+ those with an image of their class in the batch.
    Metric: `train_acc`, how often the nearest proxy is the label."""
    cosines = F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).T
    members = F.one_hot(labels, len(proxies)).bool().T
    with_positives = members.any(1)
    pull = log1p_sum_exp(-alpha * (cosines.T - delta), members)
    push = log1p_sum_exp(alpha * (cosines.T + delta), ~members)
    loss = pull.sum() / with_positives.sum().clamp(min=1) + push.mean()
    return LossOutput(loss, {"train_acc": class_vector_accuracy(cosines, labels)})


class ProxyAnchorArgs(ClassVectorArgs):
    alpha: float = Field(32.0, gt=0, description="scaling factor alpha")
    delta: float = Field(0.1, ge=0, description="margin delta")
    proxy_lr_scale: float = Field(
        100.0, gt=0, description="learning-rate multiplier of the proxies (authors' code: 100)"
    )


class ProxyAnchor(MetricLearningMethod):
    """Embedding head and one learnable proxy per training class, trained with the Proxy
    Anchor loss; labels must index the classes 0..num_classes-1."""

    Args = ProxyAnchorArgs

    def __init__(self, backbone: nn.Module, args: ProxyAnchorArgs) -> None:
        super().__init__(backbone, args)
        self.proxies = nn.Parameter(torch.empty(args.num_classes, args.embedding_dim))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        return proxy_anchor_loss(embeddings, labels, self.proxies, self.args.alpha, self.args.delta)

    def lr_scales(self) -> dict[int, float]:
        """The proxies at `proxy_lr_scale`, as the authors train them for faster convergence."""
        return {id(self.proxies): self.args.proxy_lr_scale}
