"""Supervised baseline: cross-entropy on labelled rows with the same backbone and views, the
reference every self-supervised method is compared against."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.methods.base import Method, MethodArgs


class SupervisedArgs(MethodArgs):
    num_classes: int = Field(10, ge=2)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class Supervised(Method):
    """Encoder plus a linear classifier trained with cross-entropy on `view1`; unlabelled rows
    (label -1) are ignored. A batch mixed by the pipeline (mixup/cutmix: `label_mix`,
    `mix_weight`) is scored against both labels, weighted by the mix."""

    Args = SupervisedArgs
    uses_mixed_labels = True
    classifies = True

    def __init__(self, backbone: nn.Module, args: SupervisedArgs) -> None:
        super().__init__(backbone, args)
        self.classifier = nn.Linear(backbone.num_features, args.num_classes)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.backbone(batch["view1"])).float()
        labels = batch["label"].long()
        if "mix_weight" in batch:
            loss = self.mixed_loss(logits, labels, batch["label_mix"].long(), batch["mix_weight"])
        else:
            loss = F.cross_entropy(
                logits, labels, ignore_index=-1, label_smoothing=self.args.label_smoothing
            )
        labelled = labels >= 0
        accuracy = (logits.argmax(1)[labelled] == labels[labelled]).float().mean()
        return {"loss": loss, "train_acc": accuracy.detach()}

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))

    def mixed_loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        labels_mix: torch.Tensor,
        weight: torch.Tensor,
    ) -> torch.Tensor:
        """Mean over the batch of weight * CE(label) + (1 - weight) * CE(label_mix); a term whose
        label is -1 (unlabelled) drops out and the mean is over the weight that is left."""
        weight = weight.float()

        def ce(targets: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(
                logits,
                targets,
                ignore_index=-1,
                label_smoothing=self.args.label_smoothing,
                reduction="none",
            )

        own = weight * (labels >= 0)
        other = (1 - weight) * (labels_mix >= 0)
        total = (own * ce(labels) + other * ce(labels_mix)).sum()
        return total / (own + other).sum().clamp(min=1e-12)
