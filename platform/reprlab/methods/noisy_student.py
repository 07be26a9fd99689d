"""Noisy Student (Xie et al. 2020) and distillation (Hinton et al. 2015; SimCLR v2's third step):
a frozen teacher, an earlier run's classifier, labels the unlabelled images from their weak view;
a student trained with noise (the strong view, dropout) learns those targets plus the labelled
cross-entropy. Chained in a pipeline, the student becomes the next teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.methods.base import Method, MethodArgs
from reprlab.methods.ema_classifier import EMAClassifier


def teacher_targets(
    teacher_logits: torch.Tensor, *, soft: bool, temperature: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(target distributions [N, K]: softmax(logits / temperature), or one-hot of its argmax
    when not `soft`; a [N] mask keeping rows whose top probability is >= threshold)."""
    probabilities = (teacher_logits.float() / temperature).softmax(dim=1)
    confidence, top = probabilities.max(dim=1)
    targets = probabilities if soft else F.one_hot(top, probabilities.shape[1]).float()
    return targets, (confidence >= threshold).float()


def distillation_loss(
    student_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean over all rows of mask * cross-entropy -sum_k target_k log softmax(student)_k."""
    per_row = -(targets * student_logits.float().log_softmax(dim=1)).sum(dim=1)
    return (mask * per_row).mean()


class NoisyStudentArgs(MethodArgs):
    num_classes: int = Field(10, ge=2)
    soft_targets: bool = Field(True, description="teacher's distribution, else its argmax")
    temperature: float = Field(1.0, gt=0, description="softens the teacher's logits")
    threshold: float = Field(
        0.0, ge=0, le=1, description="teacher confidence a target needs (0 keeps all)"
    )
    unlabelled_weight: float = Field(1.0, ge=0, description="weight of the unlabelled loss")
    dropout: float = Field(
        0.5, ge=0, lt=1, description="dropout on the student's features (the paper's 0.5)"
    )
    ema_decay: float = Field(
        0.0, ge=0, lt=1, description="decay of the evaluated EMA weights; 0 evaluates online"
    )


class NoisyStudent(EMAClassifier):
    """A student encoder plus linear classifier learning from `model.teacher`'s predictions.

    A batch holds `labelled` float [B,C,H,W] in [0, 1] (weak view) with `label` int64 [B], and
    `unlabelled_weak`, `unlabelled_strong` float [muB,C,H,W] (the same images): the teacher, in
    eval mode and without gradients, sees the weak view, the student the strong one, labelled
    and unlabelled in one pass so BatchNorm sees both. The teacher is not part of the student's
    state: a checkpoint holds the student alone and a resumed run gets its teacher again."""

    Args = NoisyStudentArgs
    learns_from_teacher = True

    def __init__(self, backbone: nn.Module, args: NoisyStudentArgs) -> None:
        super().__init__(backbone, args, num_classes=args.num_classes, with_ema=args.ema_decay > 0)
        self.dropout = nn.Dropout(args.dropout)
        self._teacher: list[Method] = []  # a list keeps it out of the module tree

    def take_teacher(self, teacher: Method) -> None:
        self._teacher[:] = [teacher.eval().requires_grad_(False)]

    def teacher(self) -> Method:
        """The teacher, on the student's device and in its dtype (moved when they differ)."""
        if not self._teacher:
            raise RuntimeError("noisy_student: no teacher given (model.teacher)")
        teacher, student = self._teacher[0], next(self.classifier.parameters())
        theirs = next(teacher.parameters())
        if (theirs.device, theirs.dtype) != (student.device, student.dtype):
            teacher.to(device=student.device, dtype=student.dtype)
        return teacher

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labelled, weak, strong = (
            batch["labelled"],
            batch["unlabelled_weak"],
            batch["unlabelled_strong"],
        )
        args = self.args
        targets, mask = teacher_targets(
            self.teacher().classify(weak),
            soft=args.soft_targets,
            temperature=args.temperature,
            threshold=args.threshold,
        )
        features = self.backbone(torch.cat([labelled, strong]))
        logits = self.classifier(self.dropout(features)).float()
        rows = labelled.shape[0]
        labelled_logits, strong_logits = logits.split([rows, strong.shape[0]])
        labels = batch["label"].long()
        labelled_loss = F.cross_entropy(labelled_logits, labels)
        unlabelled_loss = distillation_loss(strong_logits, targets, mask)
        accuracy = (labelled_logits.argmax(1) == labels).float().mean()
        agreement = (strong_logits.argmax(1) == targets.argmax(1)).float().mean()
        return {
            "loss": labelled_loss + args.unlabelled_weight * unlabelled_loss,
            "labelled_loss": labelled_loss.detach(),
            "unlabelled_loss": unlabelled_loss.detach(),
            "mask_rate": mask.mean(),
            "teacher_agreement": agreement.detach(),
            "train_acc": accuracy.detach(),
            "features": features[:rows].detach(),
        }

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.update_ema(self.args.ema_decay)
