"""Metric-learning losses against loop-by-loop versions of their papers' formulas, triplet
mining by hand, and the global-batch loss across 2 gloo workers."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from reprlab.config import JobConfig
from reprlab.methods.arcface import ArcFace, arcface_logits, arcface_loss, class_cosines
from reprlab.methods.contrastive import Contrastive, contrastive_loss
from reprlab.methods.metric_base import LossOutput, MetricLearningMethod, global_batch_loss
from reprlab.methods.multi_similarity import MultiSimilarity, multi_similarity_loss
from reprlab.methods.proxy_anchor import ProxyAnchor, proxy_anchor_loss
from reprlab.methods.supcon import SupCon, supcon_loss
from reprlab.methods.triplet import Triplet, mine_triplets, triplet_loss

from .gloo import run_in_gloo_workers

Tensor = torch.Tensor


def _unit(v: Tensor) -> Tensor:
    return v / v.norm()


def _dist(u: Tensor, v: Tensor) -> Tensor:
    return (_unit(u) - _unit(v)).norm()


def _cos(u: Tensor, v: Tensor) -> Tensor:
    return torch.dot(_unit(u), _unit(v))


def _mean_nonzero(terms: list[Tensor]) -> Tensor:
    active = [t for t in terms if t > 0]
    return sum(active) / len(active) if active else torch.tensor(0.0, dtype=torch.float64)


def paper_contrastive(x: Tensor, y: Tensor, pos_margin: float, neg_margin: float) -> Tensor:
    """Hadsell et al.: max(0, D - m_pos)^2 for similar pairs, max(0, m_neg - D)^2 for
    dissimilar ones, each averaged over its non-zero pairs, then summed."""
    pos, neg = [], []
    for i in range(len(y)):
        for j in range(len(y)):
            if i == j:
                continue
            d = _dist(x[i], x[j])
            if y[i] == y[j]:
                pos.append(torch.clamp(d - pos_margin, min=0) ** 2)
            else:
                neg.append(torch.clamp(neg_margin - d, min=0) ** 2)
    return _mean_nonzero(pos) + _mean_nonzero(neg)


def paper_triplet(x: Tensor, y: Tensor, margin: float, mining: str) -> Tensor:
    """max(0, d_ap - d_an + margin) over the triplets each mining rule selects."""
    n = len(y)
    if mining == "batch_hard":
        terms = []
        for a in range(n):
            positives = [_dist(x[a], x[p]) for p in range(n) if p != a and y[p] == y[a]]
            negatives = [_dist(x[a], x[k]) for k in range(n) if y[k] != y[a]]
            if positives and negatives:
                terms.append(torch.clamp(max(positives) - min(negatives) + margin, min=0))
        return sum(terms) / len(terms)
    terms = []
    for a in range(n):
        for p in range(n):
            for k in range(n):
                if p == a or y[p] != y[a] or y[k] == y[a]:
                    continue
                d_ap, d_an = _dist(x[a], x[p]), _dist(x[a], x[k])
                if mining == "hard" and not d_an < d_ap:
                    continue
                if mining == "semihard" and not d_ap < d_an < d_ap + margin:
                    continue
                terms.append(torch.clamp(d_ap - d_an + margin, min=0))
    return _mean_nonzero(terms)


def paper_multi_similarity(
    x: Tensor, y: Tensor, alpha: float, beta: float, lam: float, eps: float
) -> Tensor:
    """Eq. 6-8 of Wang et al. 2019: mine pairs per anchor, then two soft-plus terms; mean over
    all anchors."""
    n, total = len(y), 0
    for i in range(n):
        pos = [_cos(x[i], x[j]) for j in range(n) if j != i and y[j] == y[i]]
        neg = [_cos(x[i], x[j]) for j in range(n) if y[j] != y[i]]
        kept_neg = [s for s in neg if pos and s > min(pos) - eps]
        kept_pos = [s for s in pos if neg and s < max(neg) + eps]
        zero = torch.zeros((), dtype=x.dtype)  # an empty mined set adds log(1 + 0)
        pos_sum = sum((torch.exp(-alpha * (s - lam)) for s in kept_pos), zero)
        neg_sum = sum((torch.exp(beta * (s - lam)) for s in kept_neg), zero)
        total = total + torch.log(1 + pos_sum) / alpha + torch.log(1 + neg_sum) / beta
    return total / n


def paper_supcon(x: Tensor, y: Tensor, tau: float) -> Tensor:
    """Eq. 2 of Khosla et al. 2020 (L_out), over anchors with at least one positive."""
    n, losses = len(y), []
    for i in range(n):
        positives = [p for p in range(n) if p != i and y[p] == y[i]]
        if not positives:
            continue
        denominator = sum(torch.exp(_cos(x[i], x[a]) / tau) for a in range(n) if a != i)
        log_probs = [torch.log(torch.exp(_cos(x[i], x[p]) / tau) / denominator) for p in positives]
        losses.append(-sum(log_probs) / len(positives))
    return sum(losses) / len(losses)


def paper_arcface(x: Tensor, y: Tensor, w: Tensor, s: float, m: float) -> Tensor:
    """Deng et al. 2019: logits s cos(theta_j), s cos(theta_y + m) for the target; mean CE."""
    total = 0
    for i in range(len(y)):
        thetas = [torch.acos(_cos(x[i], w[j])) for j in range(len(w))]
        logits = [s * torch.cos(t + m if j == y[i] else t) for j, t in enumerate(thetas)]
        total = total - torch.log(torch.exp(logits[y[i]]) / sum(torch.exp(v) for v in logits))
    return total / len(y)


def paper_proxy_anchor(x: Tensor, y: Tensor, proxies: Tensor, alpha: float, delta: float):
    """Eq. 4 of Kim et al. 2020, proxy by proxy."""
    with_positives, pull, push = 0, 0, 0
    for c in range(len(proxies)):
        members = [i for i in range(len(y)) if y[i] == c]
        others = [i for i in range(len(y)) if y[i] != c]
        if members:
            with_positives += 1
            terms = [torch.exp(-alpha * (_cos(x[i], proxies[c]) - delta)) for i in members]
            pull = pull + torch.log(1 + sum(terms))
        terms = [torch.exp(alpha * (_cos(x[i], proxies[c]) + delta)) for i in others]
        push = push + torch.log(1 + sum(terms))
    return pull / with_positives + push / len(proxies)


def _batch(seed: int, n: int = 8, dim: int = 4, classes: int = 3) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    y = torch.arange(n) % classes
    return x, y[torch.randperm(n, generator=generator)]


def _assert_same_value_and_gradient(
    ours: Callable[[Tensor], Tensor], reference: Callable[[Tensor], Tensor], x: Tensor
) -> None:
    mine, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss, expected = ours(mine), reference(theirs)
    loss.backward()
    expected.backward()
    assert loss.item() > 0
    assert torch.allclose(loss, expected)
    assert torch.allclose(mine.grad, theirs.grad)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("margins", [(0.0, 1.0), (0.3, 1.2)])
def test_contrastive_matches_paper(seed: int, margins: tuple[float, float]) -> None:
    x, y = _batch(seed)
    _assert_same_value_and_gradient(
        lambda e: contrastive_loss(e, y, *margins).loss,
        lambda e: paper_contrastive(e, y, *margins),
        x,
    )


@pytest.mark.parametrize("mining", ["all", "hard", "semihard", "batch_hard"])
@pytest.mark.parametrize("seed", [0, 1])
def test_triplet_matches_paper(mining: str, seed: int) -> None:
    x, y = _batch(seed)
    _assert_same_value_and_gradient(
        lambda e: triplet_loss(e, y, 0.5, mining).loss,
        lambda e: paper_triplet(e, y, 0.5, mining),
        x,
    )


# Points on a line with labels 0 0 1 1 0 and margin 0.3; the distances are
#   d01 .3  d02 .5  d03 1.0  d04 1.4  d12 .2  d13 .7  d14 1.1  d23 .5  d24 .9  d34 .4
LINE = torch.tensor([0.0, 0.3, 0.5, 1.0, 1.4], dtype=torch.float64)
LINE_LABELS = torch.tensor([0, 0, 1, 1, 0])
EXPECTED_TRIPLETS = {
    # d_ap < d_an < d_ap + .3; (2, 3, 0) ties at d_ap = d_an = .5 and is neither kind.
    "semihard": {(0, 1, 2), (3, 2, 1)},
    "hard": {
        (0, 4, 2),
        (0, 4, 3),
        (1, 0, 2),
        (1, 4, 2),
        (1, 4, 3),
        (4, 0, 2),
        (4, 0, 3),
        (4, 1, 2),
        (4, 1, 3),
        (2, 3, 1),
        (3, 2, 4),
    },  # fmt: skip
    "batch_hard": {(0, 4, 2), (1, 4, 2), (2, 3, 1), (3, 2, 4), (4, 0, 3)},
}


@pytest.mark.parametrize("mining", sorted(EXPECTED_TRIPLETS))
def test_mining_by_hand(mining: str) -> None:
    distances = (LINE.unsqueeze(0) - LINE.unsqueeze(1)).abs()
    triplets = mine_triplets(distances, LINE_LABELS, 0.3, mining)
    assert set(zip(*(t.tolist() for t in triplets), strict=True)) == EXPECTED_TRIPLETS[mining]


def test_all_mining_keeps_every_valid_triplet() -> None:
    distances = (LINE.unsqueeze(0) - LINE.unsqueeze(1)).abs()
    anchors, _, _ = mine_triplets(distances, LINE_LABELS, 0.3, "all")
    # Class-0 anchors have 2 positives x 2 negatives, class-1 anchors 1 x 3.
    assert len(anchors) == 3 * 4 + 2 * 3


@pytest.mark.parametrize("params", [(2.0, 50.0, 1.0, 0.1), (2.0, 40.0, 0.5, 0.05)])
@pytest.mark.parametrize("seed", [0, 1])
def test_multi_similarity_matches_paper(params: tuple[float, ...], seed: int) -> None:
    x, y = _batch(seed)
    output = multi_similarity_loss(x, y, *params)
    assert 0 < output.metrics["mined_pairs"] < 1  # the miner really drops pairs here
    _assert_same_value_and_gradient(
        lambda e: multi_similarity_loss(e, y, *params).loss,
        lambda e: paper_multi_similarity(e, y, *params),
        x,
    )


@pytest.mark.parametrize("tau", [0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_supcon_matches_paper(tau: float, seed: int) -> None:
    x, y = _batch(seed)
    _assert_same_value_and_gradient(
        lambda e: supcon_loss(e, y, tau).loss, lambda e: paper_supcon(e, y, tau), x
    )


def test_supcon_skips_anchors_without_positives() -> None:
    x, y = _batch(2)
    y = torch.cat([y, torch.tensor([7])])
    x = torch.cat([x, torch.randn(1, 4, dtype=torch.float64)])
    assert torch.allclose(supcon_loss(x, y, 0.2).loss, paper_supcon(x, y, 0.2))


@pytest.mark.parametrize("scale,margin", [(64.0, 0.5), (30.0, 0.2)])
def test_arcface_matches_paper(scale: float, margin: float) -> None:
    x, y = _batch(3)
    weight = torch.randn(3, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    _assert_same_value_and_gradient(
        lambda e: arcface_loss(e, y, weight, scale, margin).loss,
        lambda e: paper_arcface(e, y, weight, scale, margin),
        x,
    )


def test_arcface_target_logit_by_hand() -> None:
    # An embedding at 30 degrees (any norm) and class centres at 0 and 90 degrees.
    angle = math.pi / 6
    x = 3 * torch.tensor([[math.cos(angle), math.sin(angle)]] * 2, dtype=torch.float64)
    weight = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    logits = arcface_logits(class_cosines(x, weight), labels, scale=2.0, margin=0.5)
    expected = [
        [2 * math.cos(angle + 0.5), 2 * math.cos(math.pi / 2 - angle)],
        [2 * math.cos(angle), 2 * math.cos(math.pi / 2 - angle + 0.5)],
    ]
    assert torch.allclose(logits, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("alpha,delta", [(32.0, 0.1), (16.0, 0.3)])
def test_proxy_anchor_matches_paper(alpha: float, delta: float) -> None:
    x, y = _batch(4)
    y[y == 2] = 1  # proxy 3 of 4 (and 2) then has no positive in the batch
    proxies = torch.randn(4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    _assert_same_value_and_gradient(
        lambda e: proxy_anchor_loss(e, y, proxies, alpha, delta).loss,
        lambda e: paper_proxy_anchor(e, y, proxies, alpha, delta),
        x,
    )


def test_losses_without_active_terms_are_zero_with_a_graph() -> None:
    # Two far-apart classes: no contrastive or triplet term is active.
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    for output in (contrastive_loss(x, y, 0.1, 1.0), triplet_loss(x, y, 0.2, "all")):
        assert output.loss.item() == 0
        output.loss.backward()
        assert torch.isfinite(x.grad).all()


# Losses on (embeddings, labels, class vectors) for the distributed test; margins chosen so
# every case has active terms on its data.
CASES: dict[str, Callable[[Tensor, Tensor, Tensor], LossOutput]] = {
    "contrastive": lambda e, y, w: contrastive_loss(e, y, 0.2, 1.0),
    "triplet_all": lambda e, y, w: triplet_loss(e, y, 0.5, "all"),
    "triplet_hard": lambda e, y, w: triplet_loss(e, y, 0.5, "hard"),
    "triplet_semihard": lambda e, y, w: triplet_loss(e, y, 0.5, "semihard"),
    "triplet_batch_hard": lambda e, y, w: triplet_loss(e, y, 0.5, "batch_hard"),
    "multi_similarity": lambda e, y, w: multi_similarity_loss(e, y),
    "supcon": lambda e, y, w: supcon_loss(e, y, 0.2),
    "arcface": lambda e, y, w: arcface_loss(e, y, w, 30.0, 0.5),
    "proxy_anchor": lambda e, y, w: proxy_anchor_loss(e, y, w),
}


def _losses_and_gradients(
    rank: int, world: int, inputs: Tensor, labels: Tensor, projection: Tensor, vectors: Tensor
) -> dict[str, tuple[float, Tensor, Tensor | None]]:
    """Every case through `global_batch_loss` on this worker's rows: the embeddings are
    inputs @ projection, a stand-in for the encoder shared by all workers."""
    rows = slice(rank * len(labels) // world, (rank + 1) * len(labels) // world)
    results = {}
    for name, case in CASES.items():
        weights = projection.clone().requires_grad_()
        class_vectors = vectors.clone().requires_grad_()
        output = global_batch_loss(
            lambda e, y, case=case, w=class_vectors: case(e, y, w),
            inputs[rows] @ weights,
            labels[rows],
        )
        output.loss.backward()
        results[name] = (output.loss.item(), weights.grad, class_vectors.grad)
    return results


def test_two_workers_equal_global_batch_loss_and_gradients() -> None:
    """Each worker holds half of an m-per-class batch (3 classes x 4); every worker's loss is
    the global-batch loss and the DDP mean of its parameter gradients is the global gradient."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    labels = (torch.arange(12) % 3)[torch.randperm(12, generator=generator)]
    projection = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    vectors = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    expected = _losses_and_gradients(0, 1, inputs, labels, projection, vectors)

    workers = run_in_gloo_workers(_losses_and_gradients, 2, inputs, labels, projection, vectors)

    for name, (loss, weight_grad, vector_grad) in expected.items():
        assert loss > 0, name
        for worker in workers:
            assert worker[name][0] == pytest.approx(loss, rel=1e-9), name
        ddp_weight_grad = sum(worker[name][1] for worker in workers) / 2
        assert torch.allclose(ddp_weight_grad, weight_grad), name
        if vector_grad is None:
            assert all(worker[name][2] is None for worker in workers), name
        else:
            ddp_vector_grad = sum(worker[name][2] for worker in workers) / 2
            assert torch.allclose(ddp_vector_grad, vector_grad), name


class _TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 4 * 4, 16)
        self.num_features = 16

    def forward(self, images: Tensor) -> Tensor:
        return self.linear(images.flatten(1))


@pytest.mark.parametrize(
    "method_class,metric",
    [
        (Contrastive, "active_pairs"),
        (Triplet, "active_triplets"),
        (MultiSimilarity, "mined_pairs"),
        (SupCon, None),
        (ArcFace, "train_acc"),
        (ProxyAnchor, "train_acc"),
    ],
)
def test_training_step(method_class: type[MetricLearningMethod], metric: str | None) -> None:
    extra = {"num_classes": 3} if method_class in (ArcFace, ProxyAnchor) else {}
    method = method_class(_TinyBackbone(), method_class.Args(embedding_dim=8, **extra))
    images, labels = torch.rand(6, 3, 4, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method.training_step({"view1": images, "label": labels})
        embeddings = method.embedding_head(method.backbone(images)).float()
    # The loop's bf16 autocast stops at the embeddings: the loss itself is computed in fp32.
    assert out["loss"].ndim == 0 and out["loss"].dtype == torch.float32
    assert torch.allclose(out["loss"], method.loss(embeddings, labels).loss, rtol=1e-6)
    assert out["features"].shape == (6, 16) and not out["features"].requires_grad
    assert set(out) == {"loss", "features"} | ({metric} if metric else set())
    out["loss"].backward()
    assert method.embedding_head.weight.grad is not None
    assert method.backbone.linear.weight.grad is not None
    assert torch.equal(method.embed(images), method.backbone(images))


@pytest.mark.parametrize("method", ["arcface", "proxy_anchor"])
def test_class_vector_methods_require_num_classes_before_ray(method: str) -> None:
    with pytest.raises(ValueError, match="method_args.num_classes: Field required"):
        JobConfig(method=method, data={"m_per_class": 32})


def test_proxy_anchor_scales_proxy_learning_rate() -> None:
    method = ProxyAnchor(_TinyBackbone(), ProxyAnchor.Args(num_classes=5))
    assert method.proxies.shape == (5, 128)
    assert method.lr_scales() == {id(method.proxies): 100.0}
