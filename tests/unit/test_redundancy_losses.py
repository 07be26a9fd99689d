"""Barlow Twins and VICReg losses against their papers' formulas written out element by
element, and their global-batch gathers across 2 gloo workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprlab.methods.barlow_twins import barlow_twins_loss
from reprlab.methods.vicreg import vicreg_loss

from .gloo import run_in_gloo_workers


def paper_barlow_twins(z1: np.ndarray, z2: np.ndarray, lambd: float) -> float:
    """Eq. (1)-(2) of Zbontar et al.: C_ij = sum_b za_bi zb_bj / (sqrt(sum_b za_bi^2)
    sqrt(sum_b zb_bj^2)) on batch-centred embeddings."""
    a, b = z1 - z1.mean(0), z2 - z2.mean(0)
    dim = a.shape[1]
    total = 0.0
    for i in range(dim):
        for j in range(dim):
            c = (a[:, i] * b[:, j]).sum() / (
                np.sqrt((a[:, i] ** 2).sum()) * np.sqrt((b[:, j] ** 2).sum())
            )
            total += (1 - c) ** 2 if i == j else lambd * c**2
    return total


def paper_vicreg(z1: np.ndarray, z2: np.ndarray, lam: float, mu: float, nu: float) -> float:
    """Eq. (1)-(6) of Bardes et al.: s = mean squared distance per sample / d (MSE),
    v = mean_j max(0, 1 - sqrt(Var(z_j) + 1e-4)), c = sum_{i != j} Cov_ij^2 / d."""
    n, dim = z1.shape
    invariance = sum(((z1[k] - z2[k]) ** 2).sum() for k in range(n)) / (n * dim)

    def v(z):
        return np.mean([max(0.0, 1 - np.sqrt(z[:, j].var(ddof=1) + 1e-4)) for j in range(dim)])

    def c(z):
        cov = np.cov(z, rowvar=False)
        return sum(cov[i, j] ** 2 for i in range(dim) for j in range(dim) if i != j) / dim

    return lam * invariance + mu * (v(z1) + v(z2)) / 2 + nu * (c(z1) + c(z2))


@pytest.mark.parametrize("n,dim,lambd", [(6, 3, 5e-3), (16, 5, 0.5)])
def test_barlow_twins_matches_paper(n: int, dim: int, lambd: float) -> None:
    rng = np.random.default_rng(n)
    z1, z2 = rng.normal(size=(n, dim)), rng.normal(size=(n, dim))
    ours = barlow_twins_loss(torch.from_numpy(z1), torch.from_numpy(z2), lambd).item()
    assert ours == pytest.approx(paper_barlow_twins(z1, z2, lambd), rel=1e-9)


def test_barlow_twins_is_zero_for_identical_decorrelated_views() -> None:
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert barlow_twins_loss(z, z).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n,dim", [(8, 3), (20, 6)])
def test_vicreg_matches_paper(n: int, dim: int) -> None:
    rng = np.random.default_rng(dim)
    z1, z2 = rng.normal(scale=0.5, size=(n, dim)), rng.normal(scale=2.0, size=(n, dim))
    ours = vicreg_loss(torch.from_numpy(z1), torch.from_numpy(z2), 25.0, 25.0, 1.0).item()
    assert ours == pytest.approx(paper_vicreg(z1, z2, 25.0, 25.0, 1.0), rel=1e-9)


def _worker_loss(rank: int, world: int, name: str, z1: torch.Tensor, z2: torch.Tensor):
    loss_fn = {"barlow_twins": barlow_twins_loss, "vicreg": vicreg_loss}[name]
    n = z1.shape[0] // world
    local1 = z1[rank * n : (rank + 1) * n].clone().requires_grad_()
    local2 = z2[rank * n : (rank + 1) * n].clone().requires_grad_()
    loss = loss_fn(local1, local2)
    loss.backward()
    return loss.item(), local1.grad, local2.grad


@pytest.mark.parametrize("name", ["barlow_twins", "vicreg"])
def test_two_workers_compute_the_global_batch_loss(name: str) -> None:
    """Every worker computes the loss of the whole global batch; the gather sums the workers'
    identical gradients into each slice, and DDP's averaging then gives the global gradient."""
    loss_fn = {"barlow_twins": barlow_twins_loss, "vicreg": vicreg_loss}[name]
    generator = torch.Generator().manual_seed(1)
    z1 = torch.randn(8, 4, generator=generator, dtype=torch.float64)
    z2 = torch.randn(8, 4, generator=generator, dtype=torch.float64)
    full1, full2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    global_loss = loss_fn(full1, full2)
    global_loss.backward()
    results = run_in_gloo_workers(_worker_loss, 2, name, z1, z2)
    for loss, _, _ in results:
        assert loss == pytest.approx(global_loss.item(), rel=1e-9)
    assert torch.allclose(torch.cat([g1 for _, g1, _ in results]) / 2, full1.grad)
    assert torch.allclose(torch.cat([g2 for _, _, g2 in results]) / 2, full2.grad)
