"""MixMatch: sharpening, mixup and the two losses against their formulas written element by
element, the label guess, the training step against an independent recomputation from the same
seed, the ramp-up in closed form, the checkpointed schedule and its defaults (what it shares with
the other semi-supervised methods is in test_semi_methods.py)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from reprlab.augment.mix import beta
from reprlab.methods.mixmatch import MixMatch, MixMatchArgs, mixmatch_losses, mixup, sharpen

from .semi_methods import make_batch, make_method, softmax


def test_sharpen_is_the_renormalised_power() -> None:
    probs = [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]]
    sharpened = sharpen(torch.tensor(probs, dtype=torch.float64), 0.5)
    for row, got in zip(probs, sharpened.tolist(), strict=True):
        total = sum(p**2 for p in row)
        assert got == pytest.approx([p**2 / total for p in row], rel=1e-12)
    cubed = sharpen(torch.tensor(probs, dtype=torch.float64), 1 / 3)[0].tolist()
    assert cubed == pytest.approx([p**3 / sum(q**3 for q in probs[0]) for p in probs[0]])
    torch.testing.assert_close(sharpened.sum(dim=1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(sharpen(torch.tensor(probs), 1.0), torch.tensor(probs))


def test_a_small_temperature_gives_one_hot_rows() -> None:
    # 0.5^1000 underflows float32 to 0: the power written naively would give 0 / 0.
    cold = sharpen(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]), 1e-3)
    torch.testing.assert_close(cold, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))


def test_mixup_weights_the_first_input_by_max_lambda() -> None:
    """lam 0.2, 0.7, 0.5, 0.9 mix with weights 0.8, 0.7, 0.5, 0.9 on the first input."""
    x1 = torch.arange(8.0).view(4, 1, 1, 2)
    x2 = torch.full((4, 1, 1, 2), 10.0)
    y1 = torch.eye(3)[[0, 1, 2, 0]]
    y2 = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.1, 0.8, 0.1]])
    mixed_x, mixed_y = mixup(x1, y1, x2, y2, torch.tensor([0.2, 0.7, 0.5, 0.9]))
    expected_x = [[2.0, 2.8], [4.4, 5.1], [7.0, 7.5], [6.4, 7.3]]
    expected_y = [[0.84, 0.06, 0.1], [0.3, 0.7, 0.0], [0.0, 0.25, 0.75], [0.91, 0.08, 0.01]]
    for i in range(4):
        assert mixed_x[i].flatten().tolist() == pytest.approx(expected_x[i])
        assert mixed_y[i].tolist() == pytest.approx(expected_y[i])
        assert (mixed_x[i] - x1[i]).norm() <= (mixed_x[i] - x2[i]).norm()


def test_losses_match_their_formulas() -> None:
    logits_x = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-1.0, 3.0, 0.2]]
    targets_x = [[1.0, 0.0, 0.0], [0.3, 0.7, 0.0], [0.1, 0.2, 0.7]]
    logits_u = [[0.0, 1.0, 0.0], [4.0, -2.0, 0.0]]
    targets_u = [[0.2, 0.6, 0.2], [0.9, 0.05, 0.05]]
    labelled, unlabelled = mixmatch_losses(
        *(torch.tensor(t, dtype=torch.float64) for t in (logits_x, targets_x, logits_u, targets_u))
    )
    cross_entropy = sum(
        -sum(q * math.log(p) for q, p in zip(target, softmax(row), strict=True))
        for row, target in zip(logits_x, targets_x, strict=True)
    )
    squared = sum(
        (p - q) ** 2
        for row, target in zip(logits_u, targets_u, strict=True)
        for p, q in zip(softmax(row), target, strict=True)
    )
    assert labelled.item() == pytest.approx(cross_entropy / 3, rel=1e-12)
    assert unlabelled.item() == pytest.approx(squared / (2 * 3), rel=1e-12)


def test_guess_is_the_sharpened_average_over_both_views_without_gradient() -> None:
    torch.manual_seed(0)
    method = make_method(MixMatch, sharpen_temperature=0.5)
    batch = make_batch(0)
    view1, view2 = batch["unlabelled_weak"], batch["unlabelled_strong"]
    reference = copy.deepcopy(method)
    with torch.no_grad():
        logits = reference.classifier(reference.backbone(torch.cat([view1, view2])))
    logits = logits.double().tolist()
    guess = method.guess_labels(view1, view2)
    assert not guess.requires_grad
    rows = len(view1)
    for i in range(rows):
        first, second = softmax(logits[i]), softmax(logits[rows + i])
        mean = [(a + b) / 2 for a, b in zip(first, second, strict=True)]
        expected = [p**2 / sum(q**2 for q in mean) for p in mean]
        assert guess[i].tolist() == pytest.approx(expected, rel=1e-5)


def _recompute(
    reference: MixMatch, batch: dict[str, torch.Tensor], seed: int, weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, L_x, L_u, mixed_acc, labelled features) of a step from the public helpers: guess
    from a no-grad pass over both views, then the mixing drawn after torch.manual_seed(seed)."""
    labelled, view1, view2 = batch["labelled"], batch["unlabelled_weak"], batch["unlabelled_strong"]
    with torch.no_grad():
        probs = reference.classifier(reference.backbone(torch.cat([view1, view2]))).softmax(1)
    first, second = probs.chunk(2)
    guess = sharpen((first + second) / 2, 0.5)
    images = torch.cat([labelled, view1, view2])
    targets = torch.cat([F.one_hot(batch["label"], 3).float(), guess, guess])
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
    order = torch.randperm(len(images), generator=generator)
    lam = beta(len(images), 0.75, generator, "cpu")
    mixed, mixed_targets = mixup(images, targets, images[order], targets[order], lam)
    features = reference.backbone(mixed)
    logits = reference.classifier(features)
    rows = len(labelled)
    labelled_loss, unlabelled_loss = mixmatch_losses(
        logits[:rows], mixed_targets[:rows], logits[rows:], mixed_targets[rows:]
    )
    accuracy = (logits[:rows].argmax(1) == mixed_targets[:rows].argmax(1)).float().mean()
    loss = labelled_loss + weight * unlabelled_loss
    return loss, labelled_loss, unlabelled_loss, accuracy, features[:rows].detach()


@pytest.mark.parametrize("unlabelled_weight", [0.0, 75.0])
def test_training_step_equals_an_independent_recomputation(unlabelled_weight: float) -> None:
    """Same loss, terms, metrics and gradients as the recomputation 3 steps into a ramp-up of
    0.5 * 20 = 10 steps (weight 0.3 lambda_u): the guess must carry no gradient."""
    torch.manual_seed(0)
    method = make_method(MixMatch, unlabelled_weight=unlabelled_weight, rampup_fraction=0.5)
    for step in range(3):
        method.on_step_end(step, 20)
    reference = copy.deepcopy(method)
    batch = make_batch(1)

    torch.manual_seed(7)
    output = method.training_step(batch)
    expected = _recompute(reference, batch, seed=7, weight=0.3 * unlabelled_weight)

    loss, labelled_loss, unlabelled_loss, accuracy, features = expected
    assert unlabelled_loss.item() > 0
    torch.testing.assert_close(output["loss"], loss)
    torch.testing.assert_close(output["labelled_loss"], labelled_loss.detach())
    torch.testing.assert_close(output["unlabelled_loss"], unlabelled_loss.detach())
    assert output["unlabelled_weight"].item() == pytest.approx(0.3 * unlabelled_weight)
    torch.testing.assert_close(output["mixed_acc"], accuracy)
    torch.testing.assert_close(output["features"], features)
    if unlabelled_weight == 0:
        assert output["loss"].item() == output["labelled_loss"].item()
    assert output["loss"].requires_grad
    assert not any(value.requires_grad for key, value in output.items() if key != "loss")
    output["loss"].backward()
    loss.backward()
    online = nn.Sequential(method.backbone, method.classifier)
    recomputed = nn.Sequential(reference.backbone, reference.classifier)
    for got, want in zip(online.parameters(), recomputed.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad)
    assert all(p.grad is None and not p.requires_grad for p in method.ema.parameters())


def test_the_mixing_is_reproduced_by_the_seed_and_changes_with_it() -> None:
    torch.manual_seed(0)
    method = make_method(MixMatch)
    batch = make_batch(2)
    losses = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        losses.append(method.training_step(batch)["labelled_loss"].item())
    assert losses[0] == losses[1] != losses[2]


@pytest.mark.parametrize("last_step", [None, 0, 3, 8, 9, 15])
def test_rampup_weight_in_closed_form(last_step: int | None) -> None:
    """A ramp-up of 0.5 * 20 = 10 steps; `on_step_end(k)` is called after step k, so the next
    step is step k + 1 (None: no step taken yet, weight 0)."""
    torch.manual_seed(0)
    method = make_method(MixMatch, unlabelled_weight=4.0, rampup_fraction=0.5)
    steps_taken = 0 if last_step is None else last_step + 1
    for step in range(steps_taken):
        method.on_step_end(step, 20)
    weight = method.training_step(make_batch(3))["unlabelled_weight"]
    assert weight.item() == pytest.approx(4.0 * min(steps_taken / 10, 1.0), rel=1e-6)


def test_no_rampup_means_full_weight_from_the_first_step() -> None:
    method = make_method(MixMatch, unlabelled_weight=4.0, rampup_fraction=0.0)
    assert method.training_step(make_batch(4))["unlabelled_weight"].item() == 4.0


def test_the_ramp_survives_a_checkpoint() -> None:
    """The ramp-up weight; the EMA weights are checked for all methods in
    test_semi_methods.py."""
    torch.manual_seed(0)
    method = make_method(MixMatch, rampup_fraction=0.5)
    for step in range(6):
        method.on_step_end(step, 20)
    torch.manual_seed(1)
    restored = make_method(MixMatch, rampup_fraction=0.5)
    restored.load_state_dict(method.state_dict())
    assert restored.ramp.item() == pytest.approx(0.6)
    batch = make_batch(9)
    assert (
        restored.training_step(batch)["unlabelled_weight"].item()
        == method.training_step(batch)["unlabelled_weight"].item()
        == pytest.approx(75.0 * 0.6)
    )


def test_paper_defaults_and_bounds() -> None:
    args = MixMatchArgs()
    assert (
        args.num_classes,
        args.sharpen_temperature,
        args.mix_alpha,
        args.unlabelled_weight,
        args.rampup_fraction,
        args.ema_decay,
    ) == (10, 0.5, 0.75, 75.0, 0.4, 0.999)
    for bad in (
        {"num_classes": 1},
        {"sharpen_temperature": 0},
        {"mix_alpha": 0},
        {"unlabelled_weight": -1},
        {"rampup_fraction": 1.5},
        {"ema_decay": 1},
        {"unknown": 0},
    ):
        with pytest.raises(ValidationError):
            MixMatchArgs(**bad)
