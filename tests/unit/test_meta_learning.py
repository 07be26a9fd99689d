"""ProtoNet, MAML and ANIL: losses and accuracies against numpy, meta-gradients against an
inner loop unrolled by hand with an independently computed Hessian, transductive batch norm,
test-time adaptation, and a few optimiser steps on a tiny separable episode."""

from __future__ import annotations

import copy
from functools import partial

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from reprlab.methods import METHODS, EpisodicMethod, method_class
from reprlab.methods.anil import ANIL
from reprlab.methods.maml import MAML, MAMLArgs
from reprlab.methods.protonet import ProtoNet
from reprlab.models.backbones import build_backbone


class Flatten(nn.Module):
    """Identity-like backbone: the embedding of an image is its flattened pixels."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class TanhBody(nn.Module):
    """A body with parameters: tanh(Linear(flattened pixels))."""

    def __init__(self, in_features: int, num_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_features)
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x.flatten(1)))


def episodes(
    seed: int, tasks: int, ways: int, shots: int, queries: int, dim: int, shuffle: bool = True
) -> dict[str, torch.Tensor]:
    """Random float64 episodes of [1, 1, dim] images; support rows shuffled when asked."""
    rng = np.random.default_rng(seed)
    support_label = np.tile(np.repeat(np.arange(ways), shots), (tasks, 1))
    if shuffle:
        support_label = np.stack([rng.permutation(row) for row in support_label])
    query_label = np.tile(np.repeat(np.arange(ways), queries), (tasks, 1))
    return {
        "support": torch.from_numpy(rng.normal(size=(tasks, ways * shots, 1, 1, dim))),
        "query": torch.from_numpy(rng.normal(size=(tasks, ways * queries, 1, 1, dim))),
        "support_label": torch.from_numpy(support_label),
        "query_label": torch.from_numpy(query_label),
    }


def _log_softmax_np(logits: np.ndarray) -> np.ndarray:
    top = logits.max(1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))


def test_registry_and_flags() -> None:
    assert {"protonet": ProtoNet, "maml": MAML, "anil": ANIL}.items() <= METHODS.items()
    for name in ("protonet", "maml", "anil"):
        assert (
            issubclass(method_class(name), EpisodicMethod)
            and method_class(name).batch_source == "episodes"
        )
    assert ProtoNet.ddp and not MAML.ddp and not ANIL.ddp
    with pytest.raises(ValidationError):
        MAMLArgs(inner_step=2)
    with pytest.raises(ValidationError):
        MAMLArgs(inner_steps=0)


def test_protonet_loss_and_accuracy_match_numpy() -> None:
    """Snell et al. eq. (1)-(2) per task: prototypes are class means of the support embeddings,
    p(y=n|x) = softmax(-||x - c_n||^2), loss the mean query NLL, averaged over the 2 tasks."""
    batch = episodes(0, tasks=2, ways=3, shots=2, queries=3, dim=4)
    losses, accuracies = [], []
    for t in range(2):
        s, q = batch["support"][t].flatten(1).numpy(), batch["query"][t].flatten(1).numpy()
        s_label, q_label = batch["support_label"][t].numpy(), batch["query_label"][t].numpy()
        prototypes = np.stack([s[s_label == n].mean(0) for n in range(3)])
        logits = -np.array([[np.sum((x - c) ** 2) for c in prototypes] for x in q])
        losses.append(-_log_softmax_np(logits)[np.arange(len(q)), q_label].mean())
        accuracies.append(np.mean(logits.argmax(1) == q_label))
    assert 0 < min(accuracies) and max(accuracies) < 1 and accuracies[0] != accuracies[1]

    method = ProtoNet(Flatten(4), ProtoNet.Args())
    output = method.training_step(batch)
    assert output["loss"].item() == pytest.approx(np.mean(losses), rel=1e-6)  # float32
    assert output["query_acc"].item() == pytest.approx(np.mean(accuracies), rel=1e-6)
    np.testing.assert_allclose(method.episode_accuracy(batch).numpy(), accuracies, rtol=1e-6)


def scratch_ce(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, ways: int) -> torch.Tensor:
    """Softmax cross-entropy of the linear model with flat parameters theta = [W.flatten(), b],
    written out: mean of logsumexp(Wx + b) - (Wx + b)_y."""
    dim = x.shape[1]
    weight, bias = theta[: ways * dim].view(ways, dim), theta[ways * dim :]
    logits = x @ weight.T + bias
    return (torch.logsumexp(logits, 1) - logits[torch.arange(len(y)), y]).mean()


def scratch_grad(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, ways: int) -> torch.Tensor:
    theta = theta.detach().requires_grad_()
    return torch.autograd.grad(scratch_ce(theta, x, y, ways), theta)[0]


def unrolled_meta_grad(
    theta: torch.Tensor, batch: dict[str, torch.Tensor], alpha: float, steps: int, second: bool
) -> torch.Tensor:
    """Mean over tasks of d L_query(theta_steps) / d theta, theta_{k+1} = theta_k - alpha g_k:
    (I - alpha H_0) ... (I - alpha H_{steps-1}) grad L_query(theta_steps) with H_k the support
    Hessian at theta_k (autograd.functional.hessian); without `second` just grad L_query."""
    ways = int(batch["support_label"].max()) + 1
    total = torch.zeros_like(theta)
    for t in range(len(batch["support"])):
        xs, ys = batch["support"][t].flatten(1), batch["support_label"][t]
        xq, yq = batch["query"][t].flatten(1), batch["query_label"][t]
        point, jacobians = theta.clone(), []
        for _ in range(steps):
            support_loss = partial(scratch_ce, x=xs, y=ys, ways=ways)
            hessian = torch.autograd.functional.hessian(support_loss, point)
            jacobians.append(torch.eye(len(theta), dtype=theta.dtype) - alpha * hessian)
            point = point - alpha * scratch_grad(point, xs, ys, ways)
        grad = scratch_grad(point, xq, yq, ways)
        if second:
            for jacobian in reversed(jacobians):
                grad = jacobian @ grad
        total += grad
    return total / len(batch["support"])


def linear_maml(dim: int, ways: int, **args) -> MAML:
    torch.manual_seed(0)
    return MAML(Flatten(dim), MAMLArgs(ways=ways, **args)).double()


def _flat_head_grad(method: MAML) -> torch.Tensor:
    return torch.cat([method.head.weight.grad.flatten(), method.head.bias.grad])


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_meta_gradient_matches_hand_unrolled(steps: int, first_order: bool) -> None:
    batch = episodes(1, tasks=2, ways=3, shots=2, queries=2, dim=4)
    method = linear_maml(4, 3, inner_lr=0.7, inner_steps=steps, first_order=first_order)
    theta = torch.cat([method.head.weight.flatten(), method.head.bias]).detach()
    method.training_step(batch)["loss"].backward()
    expected = unrolled_meta_grad(theta, batch, 0.7, steps, second=not first_order)
    torch.testing.assert_close(_flat_head_grad(method), expected, atol=1e-10, rtol=1e-9)
    if not first_order:  # the second-order terms matter here, so the test tells them apart
        first = unrolled_meta_grad(theta, batch, 0.7, steps, second=False)
        assert (expected - first).abs().max() > 1e-3


def test_maml_batch_norm_is_transductive() -> None:
    """No running statistics anywhere; eval mode normalises by the batch like train mode; the BN
    affine weights are adapted in the inner loop and meta-learned."""
    method = MAML(build_backbone("conv4", 1, width=4), MAMLArgs(ways=3))
    norms = [m for m in method.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 4
    assert all(not m.track_running_stats and m.running_mean is None for m in norms)
    assert not any("running" in key or "num_batches" in key for key in method.state_dict())
    assert "backbone.features.1.weight" in method.inner_parameters()
    images = torch.rand(6, 1, 8, 8)
    batch = {
        "support": torch.rand(1, 6, 1, 8, 8),
        "query": torch.rand(1, 6, 1, 8, 8),
        "support_label": torch.arange(3).repeat_interleave(2)[None],
        "query_label": torch.arange(3).repeat_interleave(2)[None],
    }
    train_features, train_loss = method.backbone(images), method.training_step(batch)["loss"]
    method.eval()
    torch.testing.assert_close(method.backbone(images), train_features)
    torch.testing.assert_close(method.training_step(batch)["loss"], train_loss)
    alone = method.backbone(images[:3])  # normalised by the statistics of these 3 only
    assert not torch.allclose(alone, train_features[:3], atol=1e-3)


def scratch_accuracy(
    theta: torch.Tensor, batch: dict[str, torch.Tensor], alpha: float, steps: int
) -> torch.Tensor:
    """Per-task query accuracy of the linear model after `steps` plain SGD steps."""
    ways = int(batch["support_label"].max()) + 1
    dim = batch["support"].shape[-1]
    accuracies = []
    for t in range(len(batch["support"])):
        xs, ys = batch["support"][t].flatten(1), batch["support_label"][t]
        point = theta.clone()
        for _ in range(steps):
            point = point - alpha * scratch_grad(point, xs, ys, ways)
        weight, bias = point[: ways * dim].view(ways, dim), point[ways * dim :]
        predicted = (batch["query"][t].flatten(1) @ weight.T + bias).argmax(1)
        accuracies.append((predicted == batch["query_label"][t]).double().mean())
    return torch.stack(accuracies)


def test_maml_episode_accuracy_uses_test_steps_and_leaks_nothing() -> None:
    batch = episodes(2, tasks=3, ways=3, shots=2, queries=4, dim=5)
    method = linear_maml(5, 3, inner_lr=0.5, inner_steps=1, test_inner_steps=3)
    theta = torch.cat([method.head.weight.flatten(), method.head.bias]).detach()
    before = copy.deepcopy(method.state_dict())
    expected = scratch_accuracy(theta, batch, 0.5, 3)
    assert not torch.equal(expected, scratch_accuracy(theta, batch, 0.5, 1))

    method.eval()
    accuracy = method.episode_accuracy(batch)
    assert accuracy.shape == (3,) and not accuracy.requires_grad
    torch.testing.assert_close(accuracy.double(), expected)
    assert all(p.grad is None for p in method.parameters())
    for key, value in method.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_anil_adapts_only_the_head_and_matches_maml_with_a_frozen_body() -> None:
    """ANIL's meta-gradient on the head is MAML's with the body frozen (same inner loop on the
    same features), its body still gets a gradient, and it runs the body once per set."""
    batch = episodes(3, tasks=2, ways=3, shots=2, queries=2, dim=5)
    args = MAMLArgs(ways=3, inner_lr=0.6, inner_steps=2)
    torch.manual_seed(0)
    anil = ANIL(TanhBody(5, 4), args).double()
    maml = MAML(copy.deepcopy(anil.backbone), args).double()
    maml.load_state_dict(anil.state_dict())
    maml.backbone.requires_grad_(False)
    assert set(anil.inner_parameters()) == {"head.weight", "head.bias"}

    calls = []
    anil.backbone.register_forward_hook(lambda *_: calls.append(1))
    anil_loss = anil.training_step(batch)["loss"]
    assert len(calls) == 2 * 2  # support and query of each task, not once per inner step
    anil_loss.backward()
    maml_loss = maml.training_step(batch)["loss"]
    maml_loss.backward()
    torch.testing.assert_close(anil_loss, maml_loss)
    torch.testing.assert_close(_flat_head_grad(anil), _flat_head_grad(maml), atol=1e-12, rtol=0)
    assert anil.backbone.linear.weight.grad.abs().max() > 1e-6


def separable_episode(seed: int) -> dict[str, torch.Tensor]:
    """2 tasks of 3-way 2-shot 2-query 1x8x8 images: a fixed template per class plus noise."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand(3, 1, 8, 8, generator=generator)

    def images(per_class: int) -> torch.Tensor:
        base = templates.repeat_interleave(per_class, 0)
        noise = 0.1 * torch.randn(2, *base.shape, generator=generator)
        return (base + noise).clamp(0, 1)

    return {
        "support": images(2),
        "query": images(2),
        "support_label": torch.arange(3).repeat_interleave(2).repeat(2, 1),
        "query_label": torch.arange(3).repeat_interleave(2).repeat(2, 1),
    }


@pytest.mark.parametrize(
    "name,args",
    [
        ("protonet", {}),
        ("maml", {"ways": 3}),
        ("maml", {"ways": 3, "first_order": True}),
        ("anil", {"ways": 3}),
    ],
)
def test_a_few_steps_lower_the_loss(name: str, args: dict) -> None:
    torch.manual_seed(0)
    cls = method_class(name)
    method = cls(build_backbone("conv4", 1, width=8), cls.Args(**args))
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-3)
    batch = separable_episode(0)
    losses = []
    for _ in range(8):
        loss = method(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
