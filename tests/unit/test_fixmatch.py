"""FixMatch: the pseudo-label loss against the paper's formula written element by element, the
training step against the same formula on the method's own logits, the EMA against its closed
form, evaluation through the EMA weights, and the batch keys it may read."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from reprlab.methods import method_class
from reprlab.methods.fixmatch import FixMatch, FixMatchArgs, fixmatch_unlabelled_loss
from reprlab.methods.supervised import Supervised, SupervisedArgs
from reprlab.models.backbones import build_backbone

KEYS = {"labelled", "label", "unlabelled_weak", "unlabelled_strong"}


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def _cross_entropy(row: list[float], target: int) -> float:
    return -row[target] + math.log(sum(math.exp(x) for x in row))


def paper_unlabelled_loss(
    weak: list[list[float]], strong: list[list[float]], threshold: float
) -> tuple[float, float]:
    """Sohn et al. eq. (4): (1/muB) sum_b 1[max q_b >= tau] H(argmax q_b, p(strong_b)), q_b the
    softmax of the weak view; and the fraction of rows with 1[...] = 1."""
    total, kept = 0.0, 0
    for weak_row, strong_row in zip(weak, strong, strict=True):
        q = _softmax(weak_row)
        if max(q) >= threshold:
            total += _cross_entropy(strong_row, q.index(max(q)))
            kept += 1
    return total / len(weak), kept / len(weak)


def _fixmatch(**args) -> FixMatch:
    return FixMatch(build_backbone("conv4", 1, width=8), FixMatchArgs(num_classes=3, **args))


def _batch(seed: int, rows: int = 4, mu: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "labelled": torch.rand(rows, 1, 12, 12, generator=generator),
        "label": torch.randint(0, 3, (rows,), generator=generator),
        "unlabelled_weak": torch.rand(mu * rows, 1, 12, 12, generator=generator),
        "unlabelled_strong": torch.rand(mu * rows, 1, 12, 12, generator=generator),
    }


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
    assert loss.item() == pytest.approx(_cross_entropy([0.0, 2.0, 0.0], 0) / 2, rel=1e-12)


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
    batch = _batch(0)
    rows, unlabelled = len(batch["label"]), len(batch["unlabelled_weak"])
    torch.manual_seed(0)
    reference = _fixmatch()
    images = torch.cat([batch["labelled"], batch["unlabelled_weak"], batch["unlabelled_strong"]])
    with torch.no_grad():
        features = reference.backbone(images)
        logits = reference.classifier(features).double().tolist()
    weak, strong = logits[rows : rows + unlabelled], logits[rows + unlabelled :]
    threshold = sorted(max(_softmax(row)) for row in weak)[unlabelled // 2]
    torch.manual_seed(0)
    method = _fixmatch(threshold=threshold, unlabelled_weight=weight)

    output = method.training_step(batch)

    labels = batch["label"].tolist()
    labelled_loss = sum(_cross_entropy(logits[i], labels[i]) for i in range(rows)) / rows
    unlabelled_loss, rate = paper_unlabelled_loss(weak, strong, threshold)
    assert 0 < rate < 1 and output["mask_rate"].item() == pytest.approx(rate)
    assert output["labelled_loss"].item() == pytest.approx(labelled_loss, rel=1e-5)
    assert output["unlabelled_loss"].item() == pytest.approx(unlabelled_loss, rel=1e-5)
    expected = labelled_loss + weight * unlabelled_loss
    assert output["loss"].item() == pytest.approx(expected, rel=1e-5)
    if weight == 0:
        assert output["loss"].item() == output["labelled_loss"].item()
    correct = sum(logits[i].index(max(logits[i])) == labels[i] for i in range(rows))
    assert output["train_acc"].item() == pytest.approx(correct / rows)
    torch.testing.assert_close(output["features"], features[:rows])
    assert output["loss"].requires_grad
    assert not any(value.requires_grad for key, value in output.items() if key != "loss")


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


def test_reads_only_the_documented_keys() -> None:
    batch = _batch(1)
    garbage = {
        "unlabelled_label": torch.full((8,), 10**6),
        "view1": torch.full((4, 1, 12, 12), float("nan")),
    }
    torch.manual_seed(0)
    method = _fixmatch(threshold=0.3)
    recording = _RecordingBatch({**batch, **garbage})
    with_garbage = method.training_step(recording)
    torch.manual_seed(0)
    without = _fixmatch(threshold=0.3).training_step(batch)
    assert recording.read <= KEYS
    for key, value in without.items():
        torch.testing.assert_close(with_garbage[key], value, atol=0, rtol=0)


def test_ema_after_k_steps_is_geometric_and_copies_batchnorm_buffers() -> None:
    """With the online weights held at P and the EMA starting at E0, k updates give
    P + decay^k (E0 - P); BatchNorm buffers are the online ones after every update."""
    torch.manual_seed(0)
    method = _fixmatch(ema_decay=0.8).double()
    with torch.no_grad():
        for parameter in method.ema.parameters():
            parameter.add_(torch.randn_like(parameter))
    method.training_step(
        {k: v.double() if v.is_floating_point() else v for k, v in _batch(2).items()}
    )
    start = [p.detach().clone() for p in method.ema.parameters()]
    online = nn.Sequential(method.backbone, method.classifier)
    for step in range(5):
        method.on_step_end(step, 5)
    for ema, fixed, initial in zip(
        method.ema.parameters(), online.parameters(), start, strict=True
    ):
        torch.testing.assert_close(ema, fixed.detach() + 0.8**5 * (initial - fixed.detach()))
        assert not ema.requires_grad
    buffers = dict(online.named_buffers())
    assert any(
        name.endswith("num_batches_tracked") and b.item() == 1 for name, b in buffers.items()
    )
    for name, buffer in method.ema.named_buffers():
        torch.testing.assert_close(buffer, buffers[name], atol=0, rtol=0)


def _sgd_step(method: FixMatch, batch: dict[str, torch.Tensor]) -> None:
    optimiser = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    method.training_step(batch)["loss"].backward()
    optimiser.step()


def test_classify_and_embed_use_the_ema_weights_in_eval_mode() -> None:
    torch.manual_seed(0)
    method = _fixmatch(ema_decay=0.9, threshold=0.3)
    before = copy.deepcopy(nn.Sequential(method.backbone, method.classifier))
    _sgd_step(method, _batch(3))
    method.on_step_end(0, 10)
    expected = copy.deepcopy(nn.Sequential(method.backbone, method.classifier)).eval()
    with torch.no_grad():
        for target, old in zip(expected.parameters(), before.parameters(), strict=True):
            target.copy_(0.9 * old + 0.1 * target)
    images = _batch(4)["labelled"]
    method.train()
    classified, embedded = method.classify(images), method.embed(images)
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(classified, expected(images))
        torch.testing.assert_close(embedded, expected[0](images))
        torch.testing.assert_close(method.classify(images), classified, atol=0, rtol=0)
        online = method.classifier(method.backbone(images))
    assert (online - classified).abs().max() > 1e-3


def test_zero_decay_evaluates_the_online_weights() -> None:
    torch.manual_seed(0)
    method = _fixmatch(ema_decay=0.0, threshold=0.3)
    _sgd_step(method, _batch(5))
    method.on_step_end(0, 10)
    images = _batch(6)["labelled"]
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            method.classify(images), method.classifier(method.backbone(images))
        )
        torch.testing.assert_close(method.embed(images), method.backbone(images))


def test_state_dict_round_trips_the_ema() -> None:
    torch.manual_seed(0)
    method = _fixmatch(ema_decay=0.5, threshold=0.3)
    _sgd_step(method, _batch(7))
    method.on_step_end(0, 10)
    torch.manual_seed(1)
    restored = _fixmatch()
    restored.load_state_dict(method.state_dict())
    images = _batch(8)["labelled"]
    torch.testing.assert_close(restored.classify(images), method.classify(images), atol=0, rtol=0)


def test_a_few_steps_on_a_fixed_batch_lower_the_loss() -> None:
    torch.manual_seed(0)
    method = _fixmatch(threshold=0.5)
    batch = _batch(9)
    optimiser = torch.optim.Adam(method.parameters(), lr=1e-2)
    losses = []
    for step in range(15):
        loss = method.training_step(batch)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        method.on_step_end(step, 15)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_registered_with_paper_defaults() -> None:
    assert method_class("fixmatch") is FixMatch
    assert FixMatch.batch_source == "labelled_unlabelled" and FixMatch.classifies
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
    images = _batch(10)["labelled"]
    logits = method.classify(images)
    assert Supervised.classifies and not logits.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(logits, method.classifier(method.backbone(images)))
