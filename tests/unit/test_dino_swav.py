"""DINO and SwAV: losses against the papers' formulas written term by term, the centring
update, the teacher temperature schedule, Sinkhorn-Knopp against an independent scaling-vector
implementation, global-batch statistics on 2 gloo workers, frozen prototypes, the methods on a
tiny conv4 and their collapse monitors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reprlab.methods.collapse import RepresentationCollapse
from reprlab.methods.dino import (
    DINO,
    dino_loss,
    teacher_entropies,
    teacher_temperature,
    updated_center,
)
from reprlab.methods.swav import SwAV, prototypes_in_use, sinkhorn, swapped_prediction_loss
from reprlab.models.backbones import build_backbone

from .gloo import run_in_gloo_workers


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return x - x.max() - math.log(np.exp(x - x.max()).sum())


def paper_dino_loss(
    student: np.ndarray, teacher: np.ndarray, center: np.ndarray, t_s: float, t_t: float
) -> float:
    """Caron et al. 2021 Alg. 1 with multi-crop: H(t, s) = -sum softmax((t - C)/t_t) *
    log softmax(s/t_s), per sample, averaged over the batch and over the pairs of teacher
    (global) view t and student view s != t."""
    losses = []
    for t in range(len(teacher)):
        for s in range(len(student)):
            if s == t:
                continue
            per_sample = [
                -np.sum(
                    _softmax((teacher[t, b] - center) / t_t) * _log_softmax(student[s, b] / t_s)
                )
                for b in range(student.shape[1])
            ]
            losses.append(np.mean(per_sample))
    return float(np.mean(losses))


@pytest.mark.parametrize("student_views", [2, 4])
def test_dino_loss_matches_algorithm_1(student_views: int) -> None:
    rng = np.random.default_rng(0)
    student = rng.normal(size=(student_views, 5, 7))
    teacher, center = rng.normal(size=(2, 5, 7)), rng.normal(size=7)
    probs = F.softmax((torch.from_numpy(teacher) - torch.from_numpy(center)) / 0.04, dim=-1)
    ours = dino_loss(torch.from_numpy(student), probs, 0.1).item()
    assert ours == pytest.approx(paper_dino_loss(student, teacher, center, 0.1, 0.04), rel=1e-10)


def test_centre_update_is_exact() -> None:
    rng = np.random.default_rng(1)
    center, logits = rng.normal(size=6), rng.normal(size=(10, 6))
    expected = 0.9 * center + 0.1 * logits.mean(axis=0)
    ours = updated_center(torch.from_numpy(center), torch.from_numpy(logits), 0.9)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-14)


@pytest.mark.parametrize(
    "step,expected", [(0, 0.04), (15, 0.055), (30, 0.07), (60, 0.07), (100, 0.07)]
)
def test_teacher_temperature_warms_up_linearly(step: int, expected: float) -> None:
    assert teacher_temperature(step, 100, 0.04, 0.07, 0.3) == pytest.approx(expected, abs=1e-15)


def test_teacher_temperature_without_warm_up_is_constant() -> None:
    assert teacher_temperature(0, 100, 0.04, 0.07, 0.0) == 0.07


def _tiny_dino(**args) -> DINO:
    sizes = {"out_dim": 16, "head_hidden_dim": 8, "head_bottleneck_dim": 4}
    return DINO(build_backbone("conv4", 1, width=4), DINO.Args(**sizes | args))


def test_dino_method_follows_the_temperature_schedule() -> None:
    method = _tiny_dino(
        warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_fraction=0.3
    )
    assert method.teacher_temp.item() == pytest.approx(0.04)
    method.on_step_end(14, 100)
    assert method.teacher_temp.item() == pytest.approx(0.055)
    method.on_step_end(99, 100)
    assert method.teacher_temp.item() == pytest.approx(0.07)


def paper_sinkhorn(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """Sinkhorn-Knopp with scaling vectors: Q = diag(u) P diag(v) for P = exp(scores^T/eps)
    normalised to sum 1, u = r / (P v) and v = c / (P^T u) in turn for the marginals r = 1/K
    (prototypes) and c = 1/B (samples); codes are the columns of B Q."""
    p = np.exp(scores.T / epsilon)
    p /= p.sum()
    k, b = p.shape
    u, v = np.ones(k), np.ones(b)
    for _ in range(iterations):
        u = (1 / k) / (p @ v)
        v = (1 / b) / (p.T @ u)
    return (b * u[:, None] * p * v[None, :]).T


def _unit_scores(rows: int, prototypes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, 16))
    c = rng.normal(size=(prototypes, 16))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return z @ c.T


def test_sinkhorn_matches_scaling_vector_implementation() -> None:
    scores = _unit_scores(12, 7, 2)
    ours = sinkhorn(torch.from_numpy(scores), 0.05, 3).numpy()
    np.testing.assert_allclose(ours, paper_sinkhorn(scores, 0.05, 3), rtol=1e-10)


def test_sinkhorn_marginals() -> None:
    """Every sample's code sums to 1; the prototypes' shares approach B/K each: after 3
    iterations much closer than the plain softmax's, and to rounding after 100."""
    scores = torch.from_numpy(_unit_scores(64, 30, 3))
    codes = sinkhorn(scores, 0.05, 3)
    torch.testing.assert_close(codes.sum(1), torch.ones(64, dtype=torch.float64))

    def spread(q: torch.Tensor) -> float:
        return float((q.sum(0) * 30 / 64 - 1).abs().max())

    assert spread(codes) < spread(F.softmax(scores / 0.05, dim=1)) / 3
    assert spread(sinkhorn(scores, 0.05, 100)) < 1e-9


def test_sinkhorn_with_a_shared_queue_equals_prepending_it() -> None:
    scores, queued = _unit_scores(6, 7, 4), _unit_scores(10, 7, 5)
    ours = sinkhorn(torch.from_numpy(scores), 0.05, 3, shared=torch.from_numpy(queued)).numpy()
    together = paper_sinkhorn(np.concatenate([queued, scores]), 0.05, 3)[-6:]
    np.testing.assert_allclose(ours, together, rtol=1e-10)


def paper_swapped_loss(
    s1: np.ndarray, s2: np.ndarray, q1: np.ndarray, q2: np.ndarray, t: float
) -> float:
    """Caron et al. 2020 eq. (1)-(2): l(z_t, q_s) = -sum_k q_s^k log p_t^k, p_t the softmax
    of z_t^T c / t; L = l(z1, q2) + l(z2, q1), averaged over the batch and the two terms."""
    terms = [
        -np.sum(q2[b] * _log_softmax(s1[b] / t)) - np.sum(q1[b] * _log_softmax(s2[b] / t))
        for b in range(len(s1))
    ]
    return float(np.mean(terms) / 2)


def test_swapped_loss_matches_formula() -> None:
    rng = np.random.default_rng(6)
    s1, s2 = _unit_scores(5, 7, 7), _unit_scores(5, 7, 8)
    q1, q2 = rng.dirichlet(np.ones(7), size=5), rng.dirichlet(np.ones(7), size=5)
    ours = swapped_prediction_loss(*(torch.from_numpy(a) for a in (s1, s2, q1, q2)), 0.1).item()
    assert ours == pytest.approx(paper_swapped_loss(s1, s2, q1, q2, 0.1), rel=1e-10)


def _global_statistics(
    rank: int, world: int, logits: np.ndarray, scores: np.ndarray, queued: np.ndarray
) -> dict:
    rows = len(logits) // world
    own = slice(rank * rows, (rank + 1) * rows)
    center = updated_center(
        torch.zeros(logits.shape[1], dtype=torch.float64), torch.from_numpy(logits[own]), 0.9
    )
    entropies = teacher_entropies(F.softmax(torch.from_numpy(logits[own]) / 0.04, dim=1))
    local_scores = torch.from_numpy(scores[own])
    codes = sinkhorn(local_scores, 0.05, 3, shared=torch.from_numpy(queued))
    return {
        "center": center.numpy(),
        "entropies": [float(e) for e in entropies],
        "codes": codes.numpy(),
        "in_use": prototypes_in_use(local_scores),
    }


def test_global_batch_statistics_on_two_workers_equal_one_process() -> None:
    """DINO's centre and collapse entropies, SwAV's codes (with a queue) and prototype usage
    from 2 workers holding half the rows each are the single-process values."""
    logits, scores, queued = (
        np.random.default_rng(9).normal(size=(8, 5)),
        _unit_scores(8, 7, 10),
        _unit_scores(4, 7, 11),
    )
    single = _global_statistics(0, 1, logits, scores, queued)
    first, second = run_in_gloo_workers(_global_statistics, 2, logits, scores, queued)
    for worker in (first, second):
        np.testing.assert_allclose(worker["center"], single["center"], rtol=1e-12)
        np.testing.assert_allclose(worker["entropies"], single["entropies"], rtol=1e-12)
        assert worker["in_use"] == single["in_use"]
    codes = np.concatenate([first["codes"], second["codes"]])
    np.testing.assert_allclose(codes, single["codes"], rtol=1e-10)
    assert single["in_use"] == len(set(scores.argmax(1)))


def _views(images: int = 6, size: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    views = torch.rand(2, images, 1, size, size, generator=generator)
    return {"view1": views[0], "view2": views[1], "label": torch.zeros(images, dtype=torch.long)}


@pytest.mark.parametrize("head_bn", [False, True])
def test_dino_step_gives_finite_loss_collapse_metrics_and_probe_features(head_bn: bool) -> None:
    torch.manual_seed(0)
    method = _tiny_dino(head_bn=head_bn)
    batch = _views() | {"local_views": torch.rand(3, 6, 1, 8, 8)}
    output = method(batch)
    assert torch.isfinite(output["loss"])
    assert 0 <= output["teacher_entropy"] <= output["teacher_mean_entropy"] <= math.log(16)
    torch.testing.assert_close(output["features"], method.backbone(batch["view1"]))
    assert not output["features"].requires_grad
    output["loss"].backward()
    assert method.head.last_layer.weight.grad is not None
    assert all(p.grad is None for p in method.teacher_head.parameters())


def test_dino_centre_moves_towards_the_teacher_mean_every_step() -> None:
    torch.manual_seed(0)
    method = _tiny_dino(center_momentum=0.5)
    batch = _views()
    with torch.no_grad():
        teacher = torch.cat(
            [method.teacher_head(method.teacher_backbone(batch[v])) for v in ("view1", "view2")]
        )
    method(batch)
    torch.testing.assert_close(method.center, 0.5 * teacher.mean(0))


def test_dino_teacher_follows_the_cosine_momentum() -> None:
    method = _tiny_dino(base_momentum=0.9)
    start = method.teacher_head.last_layer.weight.detach().clone()
    method.on_step_end(0, 10)
    online = method.head.last_layer.weight.detach()
    torch.testing.assert_close(
        method.teacher_head.last_layer.weight, online + 0.9 * (start - online)
    )


def _constant_views(images: int = 6) -> dict[str, torch.Tensor]:
    views = torch.full((images, 1, 12, 12), 0.5)
    return {"view1": views, "view2": views.clone(), "label": torch.zeros(images, dtype=torch.long)}


def test_constant_teacher_output_trips_dino_monitor() -> None:
    method = _tiny_dino(collapse_patience=3, collapse_grace_steps=2)
    for step in range(4):
        method(_constant_views())
        method.on_step_end(step, 100)
    with pytest.raises(RepresentationCollapse, match="^dino collapsed: teacher information"):
        method(_constant_views())


def _tiny_swav(**args) -> SwAV:
    sizes = {"proj_hidden_dim": 8, "proj_dim": 4, "num_prototypes": 5}
    return SwAV(build_backbone("conv4", 1, width=4), SwAV.Args(**sizes | args))


def test_swav_step_gives_finite_loss_usage_and_probe_features() -> None:
    torch.manual_seed(0)
    method = _tiny_swav(freeze_prototypes_steps=0)
    batch = _views()
    output = method(batch)
    assert torch.isfinite(output["loss"])
    assert 0 < output["prototype_usage"] <= 1
    assert 0 <= output["code_entropy"] <= math.log(5)
    torch.testing.assert_close(output["features"], method.backbone(batch["view1"]))
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(5))


def test_prototypes_do_not_move_while_frozen_and_move_after() -> None:
    """An SGD step with momentum and weight decay in the frozen phase leaves the (normalised)
    prototypes as they were; the first step after it moves them."""
    torch.manual_seed(0)
    method = _tiny_swav(freeze_prototypes_steps=1)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)

    def step(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        loss = method(_views(seed=seed))["loss"]
        before = method.prototypes.weight.detach().clone()
        optimizer.zero_grad()
        loss.backward()
        grad = method.prototypes.weight.grad.clone()
        optimizer.step()
        return before, grad

    before, grad = step(0)
    assert torch.count_nonzero(grad) == 0
    torch.testing.assert_close(F.normalize(method.prototypes.weight, dim=1), before)
    method.on_step_end(0, 10)
    before, grad = step(1)
    assert torch.count_nonzero(grad) > 0
    assert not torch.allclose(F.normalize(method.prototypes.weight, dim=1), before)


def test_swav_queue_joins_the_sinkhorn_once_full_and_started() -> None:
    method = _tiny_swav(queue_length=12, queue_start_steps=3)
    assert method.queue_scores(0) is None
    for step in range(3):
        method(_views(seed=step))
        assert method.queue_scores(0) is None
        method.on_step_end(step, 10)
    scores = method.queue_scores(1)
    assert scores is not None and scores.shape == (12, 5)


def test_constant_projections_trip_swav_monitor() -> None:
    method = _tiny_swav(collapse_patience=2, collapse_grace_steps=1)
    method(_constant_views())
    method(_constant_views())
    with pytest.raises(RepresentationCollapse, match="^swav collapsed: prototypes in use 1 <= 1"):
        method(_constant_views())
