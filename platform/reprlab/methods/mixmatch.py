"""MixMatch (Berthelot et al. 2019): labels guessed for the unlabelled images by sharpening the
average prediction over two augmentations, then mixup of labelled and unlabelled images with
their (guessed) targets; cross-entropy on the mixed labelled rows plus a ramped-up squared error
on the mixed unlabelled ones. An exponential moving average of the weights is what is evaluated."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.augment.mix import beta
from reprlab.methods.base import MethodArgs
from reprlab.methods.ema_classifier import EMAClassifier
from reprlab.methods.rampup import linear_rampup


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T) / sum_k p_k^(1/T) along dim 1, computed as softmax(log p / T) so that a small T
    does not underflow every entry to 0."""
    return (probs.log() / temperature).softmax(dim=1)


def mixup(
    x1: torch.Tensor, y1: torch.Tensor, x2: torch.Tensor, y2: torch.Tensor, lam: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(l x1 + (1 - l) x2, l y1 + (1 - l) y2) row by row with l = max(lam, 1 - lam), lam [N]:
    inputs [N, ...] and targets [N, K] mixed with the same weight, each row closer to x1."""
    weight = torch.maximum(lam, 1 - lam)
    per_input = weight.view(-1, *(1,) * (x1.dim() - 1))
    per_target = weight.view(-1, *(1,) * (y1.dim() - 1))
    return per_input * x1 + (1 - per_input) * x2, per_target * y1 + (1 - per_target) * y2


def mixmatch_losses(
    logits_x: torch.Tensor,
    targets_x: torch.Tensor,
    logits_u: torch.Tensor,
    targets_u: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_x, L_u): mean over rows of the soft cross-entropy -sum_k q_k log softmax(logits_x)_k,
    and the mean over rows and classes of (softmax(logits_u) - q)^2."""
    labelled = -(targets_x * logits_x.log_softmax(dim=1)).sum(dim=1).mean()
    return labelled, F.mse_loss(logits_u.softmax(dim=1), targets_u)


class MixMatchArgs(MethodArgs):
    num_classes: int = Field(10, ge=2)
    sharpen_temperature: float = Field(0.5, gt=0, le=1, description="T of the label guess")
    mix_alpha: float = Field(0.75, gt=0, description="alpha of the Beta(alpha, alpha) mixup weight")
    # The paper's CIFAR-10 lambda_u, for L_u averaged over the classes as well as the rows (the
    # official code's normalisation, F.mse_loss here).
    unlabelled_weight: float = Field(
        75.0, ge=0, description="lambda_u, weight of L_u at the end of the ramp-up"
    )
    rampup_fraction: float = Field(
        0.4, ge=0, le=1, description="length of the linear ramp-up of lambda_u, fraction of run"
    )
    ema_decay: float = Field(0.999, ge=0, lt=1, description="decay of the evaluated EMA weights")


class MixMatch(EMAClassifier):
    """Encoder plus a linear classifier, trained in one pass over the mixed labelled and
    unlabelled rows so BatchNorm sees them all (the official code's interleaving is not needed).

    A batch holds `labelled` float [B,C,H,W] in [0, 1] with `label` int64 [B] (all >= 0), and
    `unlabelled_weak`, `unlabelled_strong` float [muB,C,H,W]: row i of both is the same
    unlabelled image under two augmentations (K = 2; a job makes both weak). No other key is read.

    Each row gets its own mixup weight, as in the paper's Algorithm 1 (the official code draws one
    per batch). The permutation and the weights come from a generator seeded from torch's global
    RNG, so torch.manual_seed reproduces them. lambda_u * linear_rampup(t, 0, fraction * steps)
    lives in the `ramp` buffer so a checkpoint carries it. `embed` and `classify` use the EMA
    copy of backbone and classifier, always in eval mode."""

    Args = MixMatchArgs

    def __init__(self, backbone: nn.Module, args: MixMatchArgs) -> None:
        super().__init__(backbone, args, num_classes=args.num_classes, with_ema=True)
        # linear_rampup(0, 0, fraction * steps) does not depend on the steps: 0 unless fraction
        # is 0.
        self.register_buffer("ramp", torch.tensor(linear_rampup(0, 0, args.rampup_fraction)))

    @torch.no_grad()
    def guess_labels(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """sharpen(mean of the online softmax over the two views, T), float32 [muB, classes],
        from one pass over both views (BatchNorm on their batch statistics; its running
        statistics see this pass too, the official code keeps only the mixed pass's)."""
        logits = self.classifier(self.backbone(torch.cat([view1, view2]))).float()
        first, second = logits.softmax(dim=1).chunk(2)
        return sharpen((first + second) / 2, self.args.sharpen_temperature)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labelled, view1, view2 = (
            batch["labelled"],
            batch["unlabelled_weak"],
            batch["unlabelled_strong"],
        )
        guess = self.guess_labels(view1, view2)
        one_hot = F.one_hot(batch["label"].long(), self.args.num_classes).to(guess.dtype)
        images = torch.cat([labelled, view1, view2])
        targets = torch.cat([one_hot, guess, guess])
        rows, total = labelled.shape[0], images.shape[0]
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        order = torch.randperm(total, generator=generator).to(images.device)
        lam = beta(total, self.args.mix_alpha, generator, images.device)
        mixed, mixed_targets = mixup(images, targets, images[order], targets[order], lam)
        features = self.backbone(mixed)
        logits = self.classifier(features).float()
        labelled_loss, unlabelled_loss = mixmatch_losses(
            logits[:rows], mixed_targets[:rows], logits[rows:], mixed_targets[rows:]
        )
        weight = self.args.unlabelled_weight * self.ramp
        accuracy = (logits[:rows].argmax(1) == mixed_targets[:rows].argmax(1)).float().mean()
        return {
            "loss": labelled_loss + weight * unlabelled_loss,
            "labelled_loss": labelled_loss.detach(),
            "unlabelled_loss": unlabelled_loss.detach(),
            "unlabelled_weight": weight.detach(),
            "mixed_acc": accuracy,
            "features": features[:rows].detach(),
        }

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Set the ramp for the next step, step + 1; move the EMA copy."""
        self.ramp.fill_(linear_rampup(step + 1, 0, self.args.rampup_fraction * total_steps))
        self.update_ema(self.args.ema_decay)
