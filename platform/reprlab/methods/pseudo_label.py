"""Pseudo-Label (Lee 2013): cross-entropy on the labelled images plus, on the unlabelled ones,
cross-entropy against the network's own confident predictions, weighted by alpha(t) that ramps
linearly from 0 to its final value; optionally with entropy minimisation (Grandvalet & Bengio
2005) and an exponential moving average of the weights to evaluate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from reprlab.methods.base import MethodArgs
from reprlab.methods.ema_classifier import EMAClassifier
from reprlab.methods.rampup import linear_rampup


def pseudo_label_loss(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over all rows of 1[max p >= threshold] * CE(logits, argmax p), the fraction of rows
    kept), p = softmax(logits): the choice of pseudo-label carries no gradient, the logits do."""
    confidence, pseudo_labels = logits.detach().softmax(dim=1).max(dim=1)
    mask = (confidence >= threshold).to(logits.dtype)
    per_row = F.cross_entropy(logits, pseudo_labels, reduction="none")
    return (mask * per_row).mean(), mask.mean()


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the entropy -sum_k p_k log p_k of p = softmax(logits)."""
    log_p = logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


class PseudoLabelArgs(MethodArgs):
    num_classes: int = Field(10, ge=2)
    threshold: float = Field(
        0.95, ge=0, le=1, description="confidence a pseudo-label needs (0 keeps all, as Lee)"
    )
    unlabelled_weight: float = Field(3.0, ge=0, description="alpha_f, final unlabelled weight")
    rampup_start: float = Field(
        0.0, ge=0, le=1, description="T1: fraction of the steps where alpha starts to rise"
    )
    rampup_end: float = Field(
        0.4, ge=0, le=1, description="T2: fraction of the steps where alpha reaches alpha_f"
    )
    entropy_weight: float = Field(
        0.0, ge=0, description="weight of the unlabelled entropy term, relative to alpha"
    )
    ema_decay: float = Field(
        0.0, ge=0, lt=1, description="decay of the evaluated EMA weights; 0 evaluates online"
    )

    @model_validator(mode="after")
    def _ramp_in_order(self) -> PseudoLabelArgs:
        if self.rampup_start > self.rampup_end:
            raise ValueError(
                f"rampup_end: {self.rampup_end} is before rampup_start {self.rampup_start}"
            )
        return self


class PseudoLabel(EMAClassifier):
    """Encoder plus a linear classifier, trained in one pass over the labelled and the weakly
    augmented unlabelled images so BatchNorm sees both.

    A batch holds `labelled` float [B,C,H,W] in [0, 1] with `label` int64 [B] (all >= 0), and
    `unlabelled_weak` float [muB,C,H,W]. No other key is read: `unlabelled_strong` is ignored,
    so a job should set data.strong_augment to a cheap policy.

    The unlabelled weight alpha(t) = unlabelled_weight * linear_rampup(t, T1, T2), T1 and T2 the
    rampup fractions of the total steps, lives in the `ramp` buffer so a checkpoint carries it.
    `embed` and `classify` use the EMA copy (always in eval mode) when ema_decay > 0, else the
    online networks."""

    Args = PseudoLabelArgs

    def __init__(self, backbone: nn.Module, args: PseudoLabelArgs) -> None:
        super().__init__(backbone, args, num_classes=args.num_classes, with_ema=args.ema_decay > 0)
        # linear_rampup(0, T1, T2) does not depend on the total steps: 0 unless T2 is 0.
        self.register_buffer(
            "ramp", torch.tensor(linear_rampup(0, args.rampup_start, args.rampup_end))
        )

    def ramp_at(self, step: int, total_steps: int) -> float:
        """linear_rampup(step, T1, T2) with T1, T2 the rampup fractions of `total_steps`."""
        args = self.args
        return linear_rampup(step, args.rampup_start * total_steps, args.rampup_end * total_steps)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labelled, unlabelled = batch["labelled"], batch["unlabelled_weak"]
        features = self.backbone(torch.cat([labelled, unlabelled]))
        logits = self.classifier(features).float()
        rows = labelled.shape[0]
        labelled_logits, unlabelled_logits = logits.split([rows, unlabelled.shape[0]])
        labels = batch["label"].long()
        labelled_loss = F.cross_entropy(labelled_logits, labels)
        unlabelled_loss, mask_rate = pseudo_label_loss(unlabelled_logits, self.args.threshold)
        entropy = mean_entropy(unlabelled_logits)
        alpha = self.args.unlabelled_weight * self.ramp
        loss = labelled_loss + alpha * unlabelled_loss
        if self.args.entropy_weight > 0:
            loss = loss + self.args.entropy_weight * alpha * entropy
        accuracy = (labelled_logits.argmax(1) == labels).float().mean()
        return {
            "loss": loss,
            "labelled_loss": labelled_loss.detach(),
            "unlabelled_loss": unlabelled_loss.detach(),
            "mask_rate": mask_rate,
            "unlabelled_weight": alpha.detach(),
            "train_acc": accuracy.detach(),
            "entropy": entropy.detach(),
            "features": features[:rows].detach(),
        }

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Set alpha for the next step, step + 1; move the EMA copy, if any."""
        self.ramp.fill_(self.ramp_at(step + 1, total_steps))
        self.update_ema(self.args.ema_decay)
