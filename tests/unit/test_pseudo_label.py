"""Pseudo-Label: the unlabelled loss, its gradient and the entropy term against Lee's formulas
written element by element, the alpha(t) ramp by step and across a checkpoint, the training
step recomputed term by term, and its defaults (what it shares with the other semi-supervised
methods is in test_semi_methods.py)."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from reprlab.methods.pseudo_label import (
    PseudoLabel,
    PseudoLabelArgs,
    mean_entropy,
    pseudo_label_loss,
)

from .semi_methods import assert_labelled_outputs, cross_entropy, make_batch, make_method, softmax

LOGITS = [[5.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 4.0], [0.2, 0.1, 0.0], [0.0, 3.0, 0.0]]
# softmax confidences 0.987, 0.576, 0.965, 0.367, 0.909 (argmax 0, 0, 2, 0, 1).


def _entropy(rows: list[list[float]]) -> float:
    return sum(-sum(p * math.log(p) for p in softmax(row)) for row in rows) / len(rows)


def lee_unlabelled_loss(logits: list[list[float]], threshold: float) -> tuple[float, float]:
    """(1/n) sum_m 1[max p_m >= threshold] CE(logits_m, argmax p_m), p_m = softmax(logits_m)
    (Lee 2013 eq. 15's unlabelled term with a confidence threshold); and the kept fraction."""
    total, kept = 0.0, 0
    for row in logits:
        p = softmax(row)
        if max(p) >= threshold:
            total += cross_entropy(row, p.index(max(p)))
            kept += 1
    return total / len(logits), kept / len(logits)


@pytest.mark.parametrize(("threshold", "rate"), [(0.9, 3 / 5), (0.0, 1.0)])
def test_unlabelled_loss_matches_lee(threshold: float, rate: float) -> None:
    loss, kept = pseudo_label_loss(torch.tensor(LOGITS, dtype=torch.float64), threshold)
    expected, expected_rate = lee_unlabelled_loss(LOGITS, threshold)
    assert kept.item() == expected_rate == rate
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_a_confidence_equal_to_the_threshold_is_kept() -> None:
    # softmax([100, 0, 0]) rounds to exactly 1.0 in float64; softmax([1, 0, 0]) is below.
    logits = torch.tensor([[100.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    loss, rate = pseudo_label_loss(logits, 1.0)
    assert rate.item() == 0.5
    assert loss.item() == pytest.approx(cross_entropy([100.0, 0.0, 0.0], 0) / 2, abs=1e-30)


def test_the_pseudo_label_is_a_constant_of_the_gradient() -> None:
    """d/dz of the loss is (softmax(z) - onehot(argmax z)) * mask / n: the logits are trained
    towards a fixed hard target, not through how the target was chosen."""
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    loss, _ = pseudo_label_loss(logits, 0.9)
    loss.backward()
    expected = []
    for row in LOGITS:
        p = softmax(row)
        kept = max(p) >= 0.9
        target = p.index(max(p))
        expected.append([(p[k] - (k == target)) * kept / len(LOGITS) for k in range(3)])
    torch.testing.assert_close(logits.grad, torch.tensor(expected, dtype=torch.float64))


def test_mean_entropy_matches_the_formula() -> None:
    entropy = mean_entropy(torch.tensor(LOGITS, dtype=torch.float64))
    assert entropy.item() == pytest.approx(_entropy(LOGITS), rel=1e-12)
    assert mean_entropy(torch.zeros(2, 3)).item() == pytest.approx(math.log(3))


def _alpha(method: PseudoLabel, batch: dict[str, torch.Tensor]) -> float:
    return method.training_step(batch)["unlabelled_weight"].item()


@pytest.mark.parametrize(
    ("start", "end", "total", "alphas"),
    [
        # T1 = 20, T2 = 60: alpha of step s is 0 before 20, 3 (s - 20) / 40 between, 3 after.
        (0.2, 0.6, 100, {0: 0, 1: 0, 19: 0, 20: 0, 30: 0.75, 59: 3 * 39 / 40, 60: 3, 100: 3}),
        # T1 = 0, T2 = 3.5 (not rounded to a step).
        (0.0, 0.5, 7, {0: 0, 1: 3 / 3.5, 3: 3 * 3 / 3.5, 4: 3, 7: 3}),
        # A step from 0 to 3 at step 5.
        (0.5, 0.5, 10, {0: 0, 4: 0, 5: 3, 9: 3}),
        # No ramp: the full weight from the first step.
        (0.0, 0.0, 10, {0: 3, 1: 3, 9: 3}),
    ],
)
def test_alpha_ramps_with_the_steps_passed_to_on_step_end(
    start: float, end: float, total: int, alphas: dict[int, float]
) -> None:
    """Step s (0-based) is trained with alpha(s): at first on a fresh method, later after the
    loop's on_step_end(s - 1, total)."""
    batch = make_batch(0)
    torch.manual_seed(0)
    method = make_method(PseudoLabel, unlabelled_weight=3.0, rampup_start=start, rampup_end=end)
    for step, alpha in alphas.items():
        if step > 0:
            method.on_step_end(step - 1, total)
        assert _alpha(method, batch) == pytest.approx(alpha, rel=1e-6, abs=1e-7), step


@pytest.mark.parametrize("entropy_weight", [0.0, 0.5])
def test_training_step_is_labelled_plus_ramped_unlabelled(entropy_weight: float) -> None:
    """The loss from the method's logits of one pass over [labelled, unlabelled_weak] (BatchNorm
    on the statistics of both), recomputed term by term mid-ramp; the threshold is the median
    unlabelled confidence, so some pseudo-labels are kept and some are not."""
    batch = make_batch(1)
    rows, unlabelled = len(batch["label"]), len(batch["unlabelled_weak"])
    torch.manual_seed(0)
    reference = make_method(PseudoLabel)
    with torch.no_grad():
        features = reference.backbone(torch.cat([batch["labelled"], batch["unlabelled_weak"]]))
        logits = reference.classifier(features).double().tolist()
    weak = logits[rows:]
    threshold = sorted(max(softmax(row)) for row in weak)[unlabelled // 2]
    torch.manual_seed(0)
    method = make_method(
        PseudoLabel,
        threshold=threshold,
        unlabelled_weight=3.0,
        rampup_start=0.1,
        rampup_end=0.5,
        entropy_weight=entropy_weight,
    )
    method.on_step_end(19, 100)  # step 20 of 100: alpha = 3 * (20 - 10) / (50 - 10) = 0.75

    output = method.training_step(batch)

    labels = batch["label"].tolist()
    labelled_loss = sum(cross_entropy(logits[i], labels[i]) for i in range(rows)) / rows
    unlabelled_loss, rate = lee_unlabelled_loss(weak, threshold)
    entropy = _entropy(weak)
    assert 0 < rate < 1 and output["mask_rate"].item() == pytest.approx(rate)
    assert output["unlabelled_weight"].item() == pytest.approx(0.75)
    assert output["labelled_loss"].item() == pytest.approx(labelled_loss, rel=1e-5)
    assert output["unlabelled_loss"].item() == pytest.approx(unlabelled_loss, rel=1e-5)
    assert output["entropy"].item() == pytest.approx(entropy, rel=1e-5)
    expected = labelled_loss + 0.75 * unlabelled_loss + entropy_weight * 0.75 * entropy
    assert output["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert_labelled_outputs(output, logits, labels, features)


def test_the_ramp_survives_a_checkpoint() -> None:
    batch = make_batch(2)
    torch.manual_seed(0)
    method = make_method(PseudoLabel, rampup_start=0.1, rampup_end=0.5)
    method.on_step_end(19, 100)
    state = method.state_dict()
    assert state["ramp"].dtype == torch.float32
    torch.manual_seed(1)
    restored = make_method(PseudoLabel, rampup_start=0.1, rampup_end=0.5)
    restored.load_state_dict(state)
    resumed, original = restored.training_step(batch), method.training_step(batch)
    assert resumed["unlabelled_weight"].item() == pytest.approx(0.75)
    for key, value in original.items():
        torch.testing.assert_close(resumed[key], value, atol=0, rtol=0)


def test_lee_defaults_and_bounds() -> None:
    args = PseudoLabelArgs()
    assert (args.num_classes, args.threshold, args.unlabelled_weight) == (10, 0.95, 3.0)
    assert (args.rampup_start, args.rampup_end, args.entropy_weight, args.ema_decay) == (
        0.0,
        0.4,
        0.0,
        0.0,
    )
    with pytest.raises(ValidationError, match="rampup_end"):
        PseudoLabelArgs(rampup_start=0.5, rampup_end=0.3)
    for bad in (
        {"unlabelled_weight": -1},
        {"entropy_weight": -0.1},
        {"threshold": -0.1},
        {"threshold": 1.5},
        {"rampup_end": 1.5},
        {"rampup_start": -0.1},
        {"ema_decay": 1},
        {"num_classes": 1},
    ):
        with pytest.raises(ValidationError):
            PseudoLabelArgs(**bad)
