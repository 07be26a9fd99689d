"""Mean Teacher: the consistency cost against its formula written element by element, the ramp-up
weight and the EMA decay schedule in closed form, the training step term by term, the
checkpointed schedule and its defaults (what it shares with the other semi-supervised methods is
in test_semi_methods.py)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from reprlab.methods.mean_teacher import MeanTeacher, MeanTeacherArgs, softmax_squared_error

from .semi_methods import assert_labelled_outputs, cross_entropy, make_batch, make_method, softmax


def paper_consistency(student: list[list[float]], teacher: list[list[float]]) -> float:
    """(1/N) sum_i sum_c (softmax(student_i)_c - softmax(teacher_i)_c)^2."""
    total = 0.0
    for student_row, teacher_row in zip(student, teacher, strict=True):
        p, q = softmax(student_row), softmax(teacher_row)
        total += sum((p[c] - q[c]) ** 2 for c in range(len(p)))
    return total / len(student)


def closed_form_rampup(steps_taken: int, length: int) -> float:
    """exp(-5 (1 - k / L)^2) for k < L optimiser steps taken, 1 from then on."""
    return math.exp(-5 * (1 - steps_taken / length) ** 2) if steps_taken < length else 1.0


def _perturb(module: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))


def test_consistency_matches_the_formula_and_spares_the_teacher() -> None:
    student = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-1.0, 3.0, 0.2]]
    teacher = [[0.0, 1.0, 0.0], [4.0, -2.0, 0.0], [-1.0, 2.5, 0.0]]
    student_logits = torch.tensor(student, dtype=torch.float64, requires_grad=True)
    teacher_logits = torch.tensor(teacher, dtype=torch.float64, requires_grad=True)
    cost = softmax_squared_error(student_logits, teacher_logits)
    assert cost.item() == pytest.approx(paper_consistency(student, teacher), rel=1e-12)
    cost.backward()
    assert teacher_logits.grad is None
    assert student_logits.grad.abs().sum() > 0


def test_no_gradient_reaches_the_teacher() -> None:
    torch.manual_seed(0)
    method = make_method(MeanTeacher, rampup_fraction=0.0)
    method.training_step(make_batch(0))["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    assert all(p.grad is not None for p in method.classifier.parameters())
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert trainable.isdisjoint(id(p) for p in method.teacher.parameters())


@pytest.mark.parametrize("last_step", [None, 0, 3, 8, 9, 15])
def test_rampup_weight_in_closed_form(last_step: int | None) -> None:
    """A ramp-up of 0.5 * 20 = 10 steps; `on_step_end(k)` is called after step k, so the next
    step is step k + 1 (None: no step taken yet, the weight of step 0)."""
    torch.manual_seed(0)
    method = make_method(MeanTeacher, consistency_weight=4.0, rampup_fraction=0.5)
    steps_taken = 0 if last_step is None else last_step + 1
    for step in range(steps_taken):
        method.on_step_end(step, 20)
    expected = 4.0 * closed_form_rampup(steps_taken, 10)
    weight = method.training_step(make_batch(1))["consistency_weight"]
    assert weight.item() == pytest.approx(expected, rel=1e-6)


def test_no_rampup_means_full_weight_from_the_first_step() -> None:
    method = make_method(MeanTeacher, consistency_weight=4.0, rampup_fraction=0.0)
    assert method.training_step(make_batch(2))["consistency_weight"].item() == 4.0


def test_training_step_is_labelled_plus_weighted_consistency_mid_ramp() -> None:
    """The loss from the student's logits of one pass over [labelled, unlabelled_strong]
    (BatchNorm on their batch statistics) and the teacher's logits of `unlabelled_weak` (on
    that batch's statistics too, as in the official code), recomputed term by term after 3 of
    the 10 ramp-up steps; the teacher is moved off the student so that swapping them would
    show."""
    torch.manual_seed(0)
    method = make_method(MeanTeacher, consistency_weight=6.0, rampup_fraction=0.5)
    for step in range(3):
        method.on_step_end(step, 20)
    _perturb(method.teacher, seed=1)
    batch = make_batch(3)
    rows = len(batch["label"])
    reference = copy.deepcopy(method)
    with torch.no_grad():
        images = torch.cat([batch["labelled"], batch["unlabelled_strong"]])
        features = reference.backbone(images)
        logits = reference.classifier(features).double().tolist()
        teacher = reference.teacher.train()(batch["unlabelled_weak"]).double().tolist()

    output = method.training_step(batch)

    labels = batch["label"].tolist()
    labelled_loss = sum(cross_entropy(logits[i], labels[i]) for i in range(rows)) / rows
    consistency = paper_consistency(logits[rows:], teacher)
    weight = 6.0 * math.exp(-5 * (1 - 3 / 10) ** 2)
    assert output["labelled_loss"].item() == pytest.approx(labelled_loss, rel=1e-5)
    assert output["consistency"].item() == pytest.approx(consistency, rel=1e-5)
    assert output["consistency_weight"].item() == pytest.approx(weight, rel=1e-6)
    expected = labelled_loss + weight * consistency
    assert output["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert_labelled_outputs(output, logits, labels, features)


def test_ema_decay_switches_after_the_rampup_and_copies_batchnorm_buffers() -> None:
    """Student weights held at P, teacher starting at E0, a ramp-up of 0.4 * 10 = 4 steps: after
    the 4 updates of steps 0..3 the teacher is P + 0.8^4 (E0 - P), after 3 more (steps 4..6)
    P + 0.5^3 0.8^4 (E0 - P); BatchNorm buffers are the student's after every update."""
    torch.manual_seed(0)
    method = make_method(
        MeanTeacher, ema_decay=0.8, ema_decay_after_rampup=0.5, rampup_fraction=0.4
    )
    method.double()
    _perturb(method.teacher, seed=2)
    method.training_step(make_batch(4, torch.float64))
    start = [p.detach().clone() for p in method.teacher.parameters()]
    student = nn.Sequential(method.backbone, method.classifier)

    def check(factor: float) -> None:
        for teacher, fixed, initial in zip(
            method.teacher.parameters(), student.parameters(), start, strict=True
        ):
            torch.testing.assert_close(teacher, fixed + factor * (initial - fixed))

    for step in range(4):
        method.on_step_end(step, 10)
    check(0.8**4)
    for step in range(4, 7):
        method.on_step_end(step, 10)
    check(0.5**3 * 0.8**4)
    buffers = dict(student.named_buffers())
    assert any(
        name.endswith("num_batches_tracked") and b.item() == 1 for name, b in buffers.items()
    )
    for name, buffer in method.teacher.named_buffers():
        torch.testing.assert_close(buffer, buffers[name], atol=0, rtol=0)


def test_the_schedule_survives_a_checkpoint() -> None:
    """The ramp-up weight; the teacher's weights are checked for all methods in
    test_semi_methods.py."""
    torch.manual_seed(0)
    method = make_method(MeanTeacher, rampup_fraction=0.5)
    for step in range(6):
        method.on_step_end(step, 20)
    torch.manual_seed(1)
    restored = make_method(MeanTeacher, rampup_fraction=0.5)
    restored.load_state_dict(method.state_dict())
    assert restored.rampup.item() == pytest.approx(closed_form_rampup(6, 10), rel=1e-6)
    batch = make_batch(6)
    assert (
        restored.training_step(batch)["consistency_weight"].item()
        == method.training_step(batch)["consistency_weight"].item()
    )


def test_paper_defaults_and_bounds() -> None:
    args = MeanTeacherArgs()
    assert (
        args.num_classes,
        args.consistency_weight,
        args.rampup_fraction,
        args.ema_decay,
        args.ema_decay_after_rampup,
    ) == (10, 10.0, 0.3, 0.99, 0.999)
    for bad in (
        {"num_classes": 1},
        {"consistency_weight": -1},
        {"rampup_fraction": 1.5},
        {"ema_decay": 1},
        {"ema_decay_after_rampup": 1},
        {"unknown": 0},
    ):
        with pytest.raises(ValidationError):
            MeanTeacherArgs(**bad)
