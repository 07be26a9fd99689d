"""An encoder plus a linear classifier with an optional evaluated EMA copy of both: the part that
the semi-supervised methods and Noisy Student share, each adding its losses and schedules."""

from __future__ import annotations

import torch
from torch import nn
from typing_extensions import Self

from reprlab.methods.base import Method, MethodArgs
from reprlab.methods.momentum import copy_buffers, ema_update, momentum_copy


class EMAClassifier(Method):
    """`backbone` then a linear `classifier` to `num_classes` logits, trained on labelled and
    unlabelled images. Built `with_ema`, `ema` is a frozen copy of both that the subclass's
    `on_step_end` moves by `update_ema`, always in eval mode (BatchNorm on the running statistics
    copied from the online networks); without, `ema` is None and the online networks are
    evaluated."""

    batch_source = "labelled_unlabelled"
    classifies = True

    def __init__(
        self, backbone: nn.Module, args: MethodArgs, *, num_classes: int, with_ema: bool
    ) -> None:
        super().__init__(backbone, args)
        self.classifier = nn.Linear(backbone.num_features, num_classes)
        self.ema: nn.Module | None = momentum_copy(self.online()).eval() if with_ema else None

    def online(self) -> nn.Sequential:
        """The online (trained) networks: backbone then classifier."""
        return nn.Sequential(self.backbone, self.classifier)

    def train(self, mode: bool = True) -> Self:
        """Set the online networks' mode; the EMA copy, if any, stays in eval mode."""
        super().train(mode)
        if self.ema is not None:
            self.ema.eval()
        return self

    def update_ema(self, decay: float) -> None:
        """ema <- decay * ema + (1 - decay) * online for the parameters, the online networks'
        buffers copied; nothing when there is no EMA copy."""
        if self.ema is None:
            return
        online = self.online()
        ema_update(self.ema, online, decay)
        copy_buffers(self.ema, online)

    def evaluated(self) -> nn.Module:
        """The networks `embed` and `classify` use: the EMA copy, else the online ones."""
        if self.ema is not None:
            return self.ema
        return self.online()

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.evaluated()[0](images)

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.evaluated()(images)
