"""Noisy Student / distillation: the targets and loss against Hinton's and Xie's formulas written
element by element, the training step against them on the method's own logits, the teacher kept
frozen and out of the student's state, and `model.teacher` read from an earlier run or refused in
one line."""

from __future__ import annotations

import math

import pytest
import torch

from reprlab.config import ConfigError, validate_job
from reprlab.methods.noisy_student import (
    NoisyStudent,
    distillation_loss,
    teacher_targets,
)
from reprlab.methods.supervised import Supervised, SupervisedArgs
from reprlab.models.backbones import Conv4
from reprlab.runs import RunRecord, runs_root
from reprlab.train.build import make_training_module
from reprlab.train.checkpoint import TrainState, save_checkpoint
from reprlab.train.init_from import starting_point
from reprlab.train.optim import make_optimizer

from .semi_methods import assert_labelled_outputs, cross_entropy, make_batch, make_method, softmax


def paper_distillation(
    teacher: list[list[float]],
    student: list[list[float]],
    *,
    soft: bool,
    temperature: float,
    threshold: float,
) -> tuple[float, float]:
    """(1/N) sum_n 1[max q_n >= threshold] * -sum_k t_nk log p_nk with q_n = softmax(teacher_n /
    T), t_n = q_n (soft) or one-hot(argmax q_n) (hard), p_n = softmax(student_n); and the
    fraction of rows kept."""
    total, kept = 0.0, 0
    for teacher_row, student_row in zip(teacher, student, strict=True):
        q = softmax([x / temperature for x in teacher_row])
        if max(q) < threshold:
            continue
        kept += 1
        targets = q if soft else [float(k == q.index(max(q))) for k in range(len(q))]
        total += sum(t * cross_entropy(student_row, k) for k, t in enumerate(targets))
    return total / len(teacher), kept / len(teacher)


TEACHER = [[3.0, 0.0, 0.0], [0.5, 0.2, 0.0], [0.0, -1.0, 2.0], [0.0, 4.0, 1.0]]
STUDENT = [[0.3, 1.0, -0.5], [2.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.4, -1.0, 2.0]]


@pytest.mark.parametrize(
    ("soft", "temperature", "threshold"),
    [(True, 1.0, 0.0), (True, 2.0, 0.0), (False, 1.0, 0.0), (False, 1.0, 0.8), (True, 0.5, 0.8)],
)
def test_distillation_matches_the_formula(soft: bool, temperature: float, threshold: float) -> None:
    teacher = torch.tensor(TEACHER, dtype=torch.float64)
    student = torch.tensor(STUDENT, dtype=torch.float64)
    targets, mask = teacher_targets(
        teacher, soft=soft, temperature=temperature, threshold=threshold
    )
    expected, rate = paper_distillation(
        TEACHER, STUDENT, soft=soft, temperature=temperature, threshold=threshold
    )
    assert mask.mean().item() == pytest.approx(rate)
    assert distillation_loss(student, targets, mask).item() == pytest.approx(expected, rel=1e-6)
    if threshold > 0:
        assert 0 < rate < 1


def test_soft_targets_at_a_high_temperature_flatten_and_their_gradient_is_p_minus_q() -> None:
    teacher = torch.tensor(TEACHER)
    targets, _ = teacher_targets(teacher, soft=True, temperature=1000.0, threshold=0.0)
    torch.testing.assert_close(targets, torch.full((4, 3), 1 / 3), atol=1e-3, rtol=0)
    student = torch.tensor(STUDENT, dtype=torch.float64, requires_grad=True)
    targets, mask = teacher_targets(teacher.double(), soft=True, temperature=1.0, threshold=0.0)
    distillation_loss(student, targets, mask).backward()
    torch.testing.assert_close(student.grad, (student.detach().softmax(1) - targets) / 4)


def _teacher(seed: int = 5) -> Supervised:
    torch.manual_seed(seed)
    return Supervised(Conv4(in_chans=1, width=8), SupervisedArgs(num_classes=3))


@pytest.mark.parametrize("weight", [0.0, 1.5])
def test_training_step_is_labelled_ce_plus_weighted_distillation_of_the_weak_view(
    weight: float,
) -> None:
    """The student's loss from its own logits of [labelled, strong] in one pass, the targets from
    the teacher's logits of the weak view; dropout off so the logits can be recomputed."""
    batch = make_batch(0)
    rows = len(batch["label"])
    teacher = _teacher()
    with torch.no_grad():
        teacher_logits = teacher.eval().classify(batch["unlabelled_weak"]).double().tolist()
    torch.manual_seed(0)
    method = make_method(NoisyStudent, unlabelled_weight=weight, dropout=0.0, temperature=2.0)
    method.take_teacher(teacher)
    with torch.no_grad():
        features = method.backbone(torch.cat([batch["labelled"], batch["unlabelled_strong"]]))
        logits = method.classifier(features).double().tolist()

    output = method.training_step(batch)

    labels = batch["label"].tolist()
    labelled_loss = sum(cross_entropy(logits[i], labels[i]) for i in range(rows)) / rows
    unlabelled_loss, _ = paper_distillation(
        teacher_logits, logits[rows:], soft=True, temperature=2.0, threshold=0.0
    )
    assert output["labelled_loss"].item() == pytest.approx(labelled_loss, rel=1e-5)
    assert output["unlabelled_loss"].item() == pytest.approx(unlabelled_loss, rel=1e-5)
    assert output["loss"].item() == pytest.approx(labelled_loss + weight * unlabelled_loss, 1e-5)
    assert_labelled_outputs(output, logits, labels, features)


def test_the_teacher_stays_frozen_in_eval_mode_and_out_of_the_students_state() -> None:
    teacher = _teacher()
    frozen = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    method = make_method(NoisyStudent)
    method.take_teacher(teacher)
    optimiser = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    method.train()
    for seed in range(3):
        optimiser.zero_grad()
        method.training_step(make_batch(seed))["loss"].backward()
        optimiser.step()
    assert not teacher.training
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(tensor, frozen[name]), name  # BatchNorm statistics included
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not any(key.startswith("_teacher") for key in method.state_dict())
    assert all(p is not q for p in method.parameters() for q in teacher.parameters())


def test_a_student_without_a_teacher_says_so() -> None:
    with pytest.raises(RuntimeError, match="model.teacher"):
        make_method(NoisyStudent).training_step(make_batch(0))


def _finished_run(name: str, method: str = "supervised", classes: int = 10) -> torch.nn.Module:
    """A finished run `name` of `method` (conv4 width 8, 1 channel) with one checkpoint; its
    trained method."""
    job = validate_job({"method": method, "model": {"width": 8}} | _subset_if(method))
    storage = runs_root() / name
    RunRecord(name, storage, job, 1, classes, "abc", "sqlite:///x.db").save()
    torch.manual_seed(11)
    module = make_training_module(job, 1, classes)
    (storage / "checkpoint_1").mkdir()
    save_checkpoint(storage / "checkpoint_1", module, make_optimizer(job, module), TrainState(1, 1))
    return module.method.eval()


def _subset_if(method: str) -> dict:
    return {"data": {"labels_per_class": 4}} if method == "supervised" else {}


def _student_job(teacher: str | None) -> dict:
    return {
        "method": "noisy_student",
        "model": {"width": 8, "teacher": teacher},
        "data": {"labels_per_class": 4},
    }


def test_model_teacher_loads_exactly_the_finished_runs_classifier() -> None:
    saved = _finished_run("teacher-run")
    start = starting_point(validate_job(_student_job("teacher-run")), 1, 10)
    images = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(start.teacher.classify(images), saved.classify(images))
    assert start.encoder is None and not start.teacher.training


def test_model_teacher_is_refused_in_one_line_when_it_cannot_teach() -> None:
    _finished_run("pretrained", method="simclr")
    _finished_run("other-classes", classes=5)
    cases = {
        "nowhere": "model.teacher: nowhere: not a checkpoint folder",
        "pretrained": "model.teacher: pretrained trained 'simclr', which gives no class",
        "other-classes": "model.teacher: other-classes was trained on 1-channel images of 5 "
        "classes; this job's data.dataset has 1 and 10",
    }
    for teacher, message in cases.items():
        with pytest.raises(ConfigError) as error:
            starting_point(validate_job(_student_job(teacher)), 1, 10)
        assert str(error.value).startswith(message)
        assert "\n" not in str(error.value)


def test_model_teacher_is_required_by_a_student_and_refused_elsewhere() -> None:
    with pytest.raises(ConfigError, match=r"^model.teacher: method 'noisy_student' learns from"):
        starting_point(validate_job(_student_job(None)), 1, 10)
    with pytest.raises(ValueError, match=r"model.teacher: method 'fixmatch' learns from no "):
        validate_job({"method": "fixmatch", "model": {"teacher": "x"}})


def test_an_equal_or_larger_student_learns_from_a_smaller_teacher() -> None:
    """The teacher is its own network: a width-16 student takes a width-8 teacher."""
    _finished_run("small-teacher")
    job = validate_job(
        _student_job("small-teacher") | {"model": {"width": 16, "teacher": "small-teacher"}}
    )
    start = starting_point(job, 1, 10)
    module = make_training_module(job, 1, 10, None, start)
    batch = {
        "labelled": torch.rand(4, 1, 28, 28),
        "label": torch.tensor([0, 1, 2, 3]),
        "unlabelled_weak": torch.rand(6, 1, 28, 28),
        "unlabelled_strong": torch.rand(6, 1, 28, 28),
    }
    output = module.method.training_step(batch)
    assert math.isfinite(output["loss"].item()) and output["unlabelled_loss"].item() > 0
