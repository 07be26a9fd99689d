"""What FixMatch, Pseudo-Label, Mean Teacher, MixMatch and Noisy Student share through
EMAClassifier, checked on each: registration, the EMA after k updates, evaluation through the
EMA in eval mode or through the online networks at zero decay, the EMA across a checkpoint, the
batch keys read, and that a few optimiser steps lower the loss."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from reprlab.methods import method_class
from reprlab.methods.ema_classifier import EMAClassifier
from reprlab.methods.fixmatch import FixMatch
from reprlab.methods.mean_teacher import MeanTeacher
from reprlab.methods.mixmatch import MixMatch
from reprlab.methods.noisy_student import NoisyStudent
from reprlab.methods.pseudo_label import PseudoLabel
from reprlab.methods.supervised import Supervised, SupervisedArgs
from reprlab.models.backbones import Conv4

from .semi_methods import make_batch, make_method

BOTH_VIEWS = frozenset({"labelled", "label", "unlabelled_weak", "unlabelled_strong"})


@dataclass(frozen=True)
class Case:
    """A registered method, settings under which its unlabelled term trains from step 0, the
    arguments that set its EMA decay and the batch keys it may read."""

    name: str
    method: type[EMAClassifier]
    args: dict[str, Any]
    keys: frozenset[str] = BOTH_VIEWS
    decay_args: tuple[str, ...] = ("ema_decay",)

    def make(self, decay: float | None = None) -> EMAClassifier:
        """The method (a student given a fixed teacher); `decay` sets every EMA decay (None:
        the method's defaults)."""
        decays = {} if decay is None else dict.fromkeys(self.decay_args, decay)
        method = make_method(self.method, **self.args, **decays)
        if self.method.learns_from_teacher:
            torch.manual_seed(123)
            method.take_teacher(
                Supervised(Conv4(in_chans=1, width=8), SupervisedArgs(num_classes=3))
            )
        return method


CASES = [
    Case("fixmatch", FixMatch, {"threshold": 0.3}),
    Case(
        "pseudo_label",
        PseudoLabel,
        {"threshold": 0.3, "rampup_end": 0.0, "entropy_weight": 0.1},
        keys=frozenset({"labelled", "label", "unlabelled_weak"}),
    ),
    Case(
        "mean_teacher",
        MeanTeacher,
        {"rampup_fraction": 0.0},
        decay_args=("ema_decay", "ema_decay_after_rampup"),
    ),
    Case("mixmatch", MixMatch, {"rampup_fraction": 0.0}),
    Case("noisy_student", NoisyStudent, {"dropout": 0.1}),
]
each_method = pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])


def _online(method: EMAClassifier) -> nn.Sequential:
    return nn.Sequential(method.backbone, method.classifier)


def _sgd_step(method: EMAClassifier, batch: dict[str, torch.Tensor]) -> None:
    optimiser = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    method.training_step(batch)["loss"].backward()
    optimiser.step()


class _RecordingBatch(dict):
    """A batch that remembers every key the method looks up."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default=None):
        self.read.add(key)
        return super().get(key, default)


@each_method
def test_registered_as_a_classifier_of_labelled_and_unlabelled_batches(case: Case) -> None:
    assert method_class(case.name) is case.method
    assert case.method.batch_source == "labelled_unlabelled" and case.method.classifies


@each_method
def test_ema_after_k_updates_is_geometric_and_copies_batchnorm_buffers(case: Case) -> None:
    """With the online weights held at P and the EMA starting at E0, k updates give
    P + decay^k (E0 - P); BatchNorm buffers are the online ones after every update."""
    torch.manual_seed(0)
    method = case.make(decay=0.8).double()
    with torch.no_grad():
        for parameter in method.ema.parameters():
            parameter.add_(torch.randn_like(parameter))
    method.training_step(make_batch(2, torch.float64))
    start = [p.detach().clone() for p in method.ema.parameters()]
    online = _online(method)
    for step in range(5):
        method.on_step_end(step, 5)
    for ema, fixed, initial in zip(
        method.ema.parameters(), online.parameters(), start, strict=True
    ):
        torch.testing.assert_close(ema, fixed.detach() + 0.8**5 * (initial - fixed.detach()))
        assert not ema.requires_grad
    buffers = dict(online.named_buffers())
    assert any(name.endswith("num_batches_tracked") and b.item() > 0 for name, b in buffers.items())
    for name, buffer in method.ema.named_buffers():
        torch.testing.assert_close(buffer, buffers[name], atol=0, rtol=0)


@each_method
def test_classify_and_embed_use_the_ema_weights_in_eval_mode(case: Case) -> None:
    torch.manual_seed(0)
    method = case.make(decay=0.9)
    before = copy.deepcopy(_online(method))
    _sgd_step(method, make_batch(3))
    method.on_step_end(0, 10)
    expected = copy.deepcopy(_online(method)).eval()
    with torch.no_grad():
        for target, old in zip(expected.parameters(), before.parameters(), strict=True):
            target.copy_(0.9 * old + 0.1 * target)
    images = make_batch(4)["labelled"]
    method.train()
    classified, embedded = method.classify(images), method.embed(images)
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(classified, expected(images))
        torch.testing.assert_close(embedded, expected[0](images))
        torch.testing.assert_close(method.classify(images), classified, atol=0, rtol=0)
        online = _online(method)(images)
    assert not classified.requires_grad and not embedded.requires_grad
    assert (online - classified).abs().max() > 1e-3


@each_method
def test_zero_decay_evaluates_the_online_weights(case: Case) -> None:
    """A decay of 0 evaluates the weights of the last step (Pseudo-Label, whose default it is,
    then keeps no EMA copy)."""
    torch.manual_seed(0)
    method = case.make(decay=0.0)
    _sgd_step(method, make_batch(5))
    method.on_step_end(0, 10)
    images = make_batch(6)["labelled"]
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(method.classify(images), _online(method)(images))
        torch.testing.assert_close(method.embed(images), method.backbone(images))


@each_method
def test_state_dict_round_trips_the_evaluated_weights(case: Case) -> None:
    torch.manual_seed(0)
    method = case.make(decay=0.5)
    _sgd_step(method, make_batch(7))
    method.on_step_end(0, 10)
    torch.manual_seed(1)
    restored = case.make(decay=0.5)
    restored.load_state_dict(method.state_dict())
    images = make_batch(8)["labelled"]
    torch.testing.assert_close(restored.classify(images), method.classify(images), atol=0, rtol=0)
    torch.testing.assert_close(restored.embed(images), method.embed(images), atol=0, rtol=0)


@each_method
def test_reads_only_the_documented_keys(case: Case) -> None:
    """Other keys, the batch's own ones among them (NaN), are not read and change nothing."""
    batch = make_batch(1)
    documented = {key: batch[key] for key in case.keys}
    garbage = {
        "unlabelled_label": torch.full((8,), 10**6),
        "view1": torch.full((4, 1, 12, 12), float("nan")),
        **{key: torch.full_like(batch[key], float("nan")) for key in batch.keys() - case.keys},
    }
    torch.manual_seed(0)
    recording = _RecordingBatch({**documented, **garbage})
    with_garbage = case.make().training_step(recording)
    torch.manual_seed(0)
    without = case.make().training_step(documented)
    assert recording.read <= case.keys
    for key, value in without.items():
        torch.testing.assert_close(with_garbage[key], value, atol=0, rtol=0)


@each_method
def test_a_few_steps_on_a_fixed_batch_lower_the_loss(case: Case) -> None:
    """Every loss is a sum of non-negative terms. torch is reseeded before every step, so MixMatch
    mixes the same way each time and the objective is fixed but for the pseudo-labels, guesses
    or teacher."""
    torch.manual_seed(0)
    method = case.make()
    batch = make_batch(9)
    optimiser = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for step in range(15):
        torch.manual_seed(100)
        loss = method.training_step(batch)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        method.on_step_end(step, 15)
        losses.append(loss.item())
    assert 0 <= losses[-1] < 0.5 * losses[0]
