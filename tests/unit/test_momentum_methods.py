"""MoCo v2/v3, BYOL and SimSiam: losses against their papers' formulas written term by term,
momentum schedules and EMA updates against their closed forms, queue behaviour across 2 gloo
workers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from reprlab.methods import method_class
from reprlab.methods.byol import normalized_mse_loss
from reprlab.methods.moco_v2 import KeyQueue, info_nce_loss
from reprlab.methods.moco_v3 import moco_v3_contrastive_loss
from reprlab.methods.momentum import cosine_momentum, ema_update, momentum_copy
from reprlab.methods.simsiam import negative_cosine_loss
from reprlab.models.backbones import build_backbone

from .gloo import run_in_gloo_workers


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def paper_info_nce(q: np.ndarray, k: np.ndarray, queue: np.ndarray, t: float) -> float:
    """He et al. eq. (1): -log exp(q.k+/t) / sum over {k+} and the queue of exp(q.k/t)."""
    losses = []
    for i in range(len(q)):
        qi, ki = _unit(q[i]), _unit(k[i])
        positive = math.exp(qi @ ki / t)
        negatives = sum(math.exp(qi @ n / t) for n in queue)
        losses.append(-math.log(positive / (positive + negatives)))
    return float(np.mean(losses))


def test_info_nce_matches_paper() -> None:
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    queue = np.stack([_unit(v) for v in rng.normal(size=(7, 4))])
    ours = info_nce_loss(*(torch.from_numpy(a) for a in (q, k, queue)), temperature=0.2).item()
    assert ours == pytest.approx(paper_info_nce(q, k, queue, 0.2), rel=1e-9)


def paper_moco_v3(q: np.ndarray, k: np.ndarray, t: float) -> float:
    """Chen et al. 2021 Alg. 1: CE(q k^T / t, diagonal labels) * 2t on unit vectors."""
    losses = []
    for i in range(len(q)):
        logits = [_unit(q[i]) @ _unit(k[j]) / t for j in range(len(k))]
        losses.append(-logits[i] + math.log(sum(math.exp(x) for x in logits)))
    return float(np.mean(losses)) * 2 * t


def test_moco_v3_loss_matches_paper() -> None:
    rng = np.random.default_rng(1)
    q, k = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    ours = moco_v3_contrastive_loss(torch.from_numpy(q), torch.from_numpy(k), 0.5).item()
    assert ours == pytest.approx(paper_moco_v3(q, k, 0.5), rel=1e-9)


def _moco_v3_worker(rank: int, world: int, q: np.ndarray, k: np.ndarray) -> float:
    n = len(q) // world
    rows = slice(rank * n, (rank + 1) * n)
    return moco_v3_contrastive_loss(
        torch.from_numpy(q[rows]), torch.from_numpy(k[rows]), 0.5
    ).item()


def test_moco_v3_loss_over_two_workers_is_the_global_batch_loss() -> None:
    rng = np.random.default_rng(2)
    q, k = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    per_worker = run_in_gloo_workers(_moco_v3_worker, 2, q, k)
    assert np.mean(per_worker) == pytest.approx(paper_moco_v3(q, k, 0.5), rel=1e-9)


def test_normalized_mse_is_byol_formula_and_stops_target_gradient() -> None:
    rng = np.random.default_rng(3)
    p, z = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    expected = np.mean([np.sum((_unit(p[i]) - _unit(z[i])) ** 2) for i in range(4)])
    prediction = torch.from_numpy(p).requires_grad_()
    target = torch.from_numpy(z).requires_grad_()
    loss = normalized_mse_loss(prediction, target)
    loss.backward()
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert target.grad is None and prediction.grad is not None


def test_negative_cosine_is_simsiam_formula_and_stops_target_gradient() -> None:
    rng = np.random.default_rng(4)
    p, z = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    expected = -np.mean([_unit(p[i]) @ _unit(z[i]) for i in range(4)])
    target = torch.from_numpy(z).requires_grad_()
    loss = negative_cosine_loss(torch.from_numpy(p).requires_grad_(), target)
    loss.backward()
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert target.grad is None


@pytest.mark.parametrize(
    "base,step,total,expected",
    [
        (0.996, 0, 100, 0.996),
        (0.996, 50, 100, 0.998),
        (0.996, 100, 100, 1.0),
        (0.996, 25, 100, 1 - 0.004 * (math.sqrt(0.5) + 1) / 2),
        (0.99, 75, 100, 1 - 0.01 * (1 - math.sqrt(0.5)) / 2),
    ],
)
def test_cosine_momentum_closed_form(base: float, step: int, total: int, expected: float) -> None:
    assert cosine_momentum(base, step, total) == pytest.approx(expected, abs=1e-12)


def test_ema_update_after_n_steps_is_geometric() -> None:
    online = nn.Linear(3, 2).double()
    target = momentum_copy(nn.Linear(3, 2).double())
    start = target.weight.detach().clone()
    for _ in range(5):
        ema_update(target, online, 0.9)
    expected = online.weight + 0.9**5 * (start - online.weight)
    torch.testing.assert_close(target.weight, expected.detach())
    assert not any(p.requires_grad for p in target.parameters())


def _small(name: str, **args) -> nn.Module:
    cls = method_class(name)
    return cls(build_backbone("conv4", 1, width=4), cls.Args(proj_hidden_dim=8, proj_dim=4, **args))


@pytest.mark.parametrize(
    "name,args,schedule",
    [
        (
            "byol",
            {"base_momentum": 0.9, "pred_hidden_dim": 8},
            lambda k, n: cosine_momentum(0.9, k, n),
        ),
        (
            "moco_v3",
            {"base_momentum": 0.9, "pred_hidden_dim": 8},
            lambda k, n: cosine_momentum(0.9, k, n),
        ),
        ("moco_v2", {"base_momentum": 0.9, "queue_size": 8}, lambda k, n: 0.9),
    ],
)
def test_method_target_follows_its_schedule(name: str, args: dict, schedule) -> None:
    """With the online network fixed, after steps 0..n-1 the target is
    online + prod_k m_k * (target_0 - online)."""
    torch.manual_seed(0)
    method = _small(name, **args).double()
    start = [p.detach().clone() for p in method.target_backbone.parameters()]
    total = 6
    for step in range(total):
        method.on_step_end(step, total)
    factor = math.prod(schedule(k, total) for k in range(total))
    for target, online, initial in zip(
        method.target_backbone.parameters(), method.backbone.parameters(), start, strict=True
    ):
        torch.testing.assert_close(target, online.detach() + factor * (initial - online.detach()))
    assert method.momentum == pytest.approx(schedule(total - 1, total))


def test_queue_is_fifo_and_wraps() -> None:
    queue = KeyQueue(size=5, dim=2)
    first = torch.tensor([[1.0, 0], [0, 1], [-1, 0]])
    second = torch.tensor([[0.0, -1], [0.6, 0.8], [-0.8, 0.6]])
    queue.enqueue(first)
    queue.enqueue(second * 3)
    torch.testing.assert_close(queue.keys[[3, 4, 0]], second)
    torch.testing.assert_close(queue.keys[[1, 2]], first[1:])
    assert queue.pointer.item() == 1


def _queue_worker(rank: int, world: int) -> list:
    queue = KeyQueue(size=4, dim=2)
    queue.enqueue(torch.tensor([[1.0 + rank, 0.0]]) if rank else torch.tensor([[0.0, 1.0]]))
    return queue.keys[:2].tolist()


def test_queue_enqueues_every_workers_keys_in_rank_order() -> None:
    first, second = run_in_gloo_workers(_queue_worker, 2)
    assert first == second == [[0.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("name", ["moco_v2", "moco_v3", "byol", "simsiam"])
def test_methods_report_features_of_view1_and_a_finite_loss(name: str) -> None:
    extra = {"queue_size": 16} if name == "moco_v2" else {"pred_hidden_dim": 8}
    method = _small(name, **extra)
    views = torch.rand(2, 6, 1, 12, 12)
    output = method({"view1": views[0], "view2": views[1]})
    assert torch.isfinite(output["loss"])
    torch.testing.assert_close(output["features"], method.backbone(views[0]), atol=0, rtol=0)
