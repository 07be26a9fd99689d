"""FixMatch: the pseudo-label loss against the paper's formula written element by element, the
training step against the same formula on the method's own logits, and its defaults (what it
shares with the other semi-supervised methods is in test_semi_methods.py)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from reprlab.methods.fixmatch import FixMatch, FixMatchArgs, fixmatch_unlabelled_loss
from reprlab.methods.supervised import Supervised, SupervisedArgs
from reprlab.models.backbones import build_backbone

from .semi_methods import assert_labelled_outputs, cross_entropy, make_batch, make_method, softmax


def paper_unlabelled_loss(
    weak: list[list[float]], strong: list[list[float]], threshold: float
) -> tuple[float, float]:
    """Sohn et al. eq. (4): (1/muB) sum_b 1[max q_b >= tau] H(argmax q_b, p(strong_b)), q_b the
    softmax of the weak view; and the fraction of rows with 1[...] = 1."""
    total, kept = 0.0, 0
    for weak_row, strong_row in zip(weak, strong, strict=True):
        q = softmax(weak_row)
        if max(q) >= threshold:
            total += cross_entropy(strong_row, q.index(max(q)))
            kept += 1
    return total / len(weak), kept / len(weak)


def test_unlabelled_loss_matches_paper() -> None:
    weak = [[5.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 4.0], [0.2, 0.1, 0.0], [0.0, 3.0, 0.0]]
    strong = [[0.3, 1.0, -0.5], [2.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.5, 0.1], [0.4, -1.0, 2.0]]
    # confidences 0.987, 0.576, 0.965, 0.367, 0.909: rows 0, 2 and 4 are kept.
    loss, rate = fixmatch_unlabelled_loss(
        torch.tensor(weak, dtype=torch.float64), torch.tensor(strong, dtype=torch.float64), 0.9
    )
    expected, expected_rate = paper_unlabelled_loss(weak, strong, 0.9)
    assert expected_rate == rate.item() == 3 / 5
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_a_confidence_equal_to_the_threshold_is_kept() -> None:
    # softmax([100, 0, 0]) rounds to exactly 1.0 in float64; softmax([1, 0, 0]) is below.
    weak = torch.tensor([[100.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    strong = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    loss, rate = fixmatch_unlabelled_loss(weak, strong, 1.0)
    assert rate.item() == 0.5
    assert loss.item() == pytest.approx(cross_entropy([0.0, 2.0, 0.0], 0) / 2, rel=1e-12)


def test_unlabelled_gradient_reaches_only_the_kept_strong_rows() -> None:
    weak = torch.tensor([[5.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 4.0]], dtype=torch.float64)
    strong = torch.tensor([[0.3, 1.0, -0.5], [2.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    weak.requires_grad_()
    strong.requires_grad_()
    loss, _ = fixmatch_unlabelled_loss(weak, strong, 0.95)
    loss.backward()
    assert weak.grad is None
    # d/ds of CE(s, y) / N is (softmax(s) - onehot(y)) / N on kept rows, 0 on the others.
    expected = strong.detach().softmax(1) - torch.eye(3, dtype=torch.float64)[[0, 0, 2]]
    expected[1] = 0
    torch.testing.assert_close(strong.grad, expected / 3)


def test_nothing_confident_gives_zero_loss_and_rate() -> None:
    weak, strong = torch.zeros(4, 3), torch.randn(4, 3)
    loss, rate = fixmatch_unlabelled_loss(weak, strong, 0.5)
    assert loss.item() == 0 and rate.item() == 0


@pytest.mark.parametrize("weight", [0.0, 2.5])
def test_training_step_is_labelled_plus_weighted_unlabelled(weight: float) -> None:
    """The loss from the method's logits of one pass over [labelled, weak, strong] (BatchNorm on
    the statistics of all three), recomputed term by term; the threshold is the median weak
    confidence, so some pseudo-labels are kept and some are not."""
    batch = make_batch(0)
    rows, unlabelled = len(batch["label"]), len(batch["unlabelled_weak"])
    torch.manual_seed(0)
    reference = make_method(FixMatch)
    images = torch.cat([batch["labelled"], batch["unlabelled_weak"], batch["unlabelled_strong"]])
    with torch.no_grad():
        features = reference.backbone(images)
        logits = reference.classifier(features).double().tolist()
    weak, strong = logits[rows : rows + unlabelled], logits[rows + unlabelled :]
    threshold = sorted(max(softmax(row)) for row in weak)[unlabelled // 2]
    torch.manual_seed(0)
    method = make_method(FixMatch, threshold=threshold, unlabelled_weight=weight)

    output = method.training_step(batch)

    labels = batch["label"].tolist()
    labelled_loss = sum(cross_entropy(logits[i], labels[i]) for i in range(rows)) / rows
    unlabelled_loss, rate = paper_unlabelled_loss(weak, strong, threshold)
    assert 0 < rate < 1 and output["mask_rate"].item() == pytest.approx(rate)
    assert output["labelled_loss"].item() == pytest.approx(labelled_loss, rel=1e-5)
    assert output["unlabelled_loss"].item() == pytest.approx(unlabelled_loss, rel=1e-5)
    expected = labelled_loss + weight * unlabelled_loss
    assert output["loss"].item() == pytest.approx(expected, rel=1e-5)
    if weight == 0:
        assert output["loss"].item() == output["labelled_loss"].item()
    assert_labelled_outputs(output, logits, labels, features)


def test_paper_defaults_and_bounds() -> None:
    args = FixMatchArgs()
    assert (args.num_classes, args.threshold, args.unlabelled_weight, args.ema_decay) == (
        10,
        0.95,
        1.0,
        0.999,
    )
    for bad in ({"threshold": 0}, {"threshold": 1.5}, {"ema_decay": 1}, {"unlabelled_weight": -1}):
        with pytest.raises(ValidationError):
            FixMatchArgs(**bad)


def test_supervised_classifies_with_its_classifier() -> None:
    torch.manual_seed(0)
    method = Supervised(build_backbone("conv4", 1, width=8), SupervisedArgs(num_classes=3))
    method.eval()
    images = make_batch(10)["labelled"]
    logits = method.classify(images)
    assert Supervised.classifies and not logits.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(logits, method.classifier(method.backbone(images)))
