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
    (label -1) are ignored."""

    Args = SupervisedArgs

    def __init__(self, backbone: nn.Module, args: SupervisedArgs) -> None:
        super().__init__(backbone, args)
        self.classifier = nn.Linear(backbone.num_features, args.num_classes)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.backbone(batch["view1"])).float()
        labels = batch["label"].long()
        loss = F.cross_entropy(
            logits, labels, ignore_index=-1, label_smoothing=self.args.label_smoothing
        )
        labelled = labels >= 0
        accuracy = (logits.argmax(1)[labelled] == labels[labelled]).float().mean()
        return {"loss": loss, "train_acc": accuracy.detach()}
