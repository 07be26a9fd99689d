"""NT-Xent against the SimCLR paper's definition, single process and across 2 gloo workers."""

from __future__ import annotations

import math

import pytest
import torch

from reprlab.methods.simclr import nt_xent_loss

from .gloo import run_in_gloo_workers


def paper_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """Algorithm 1 of Chen et al. 2020, written out term by term: views interleaved as
    (2k-1, 2k); l(i,j) = -log exp(s_ij/tau) / sum_{k != i} exp(s_ik/tau); mean over the 2N
    ordered positive pairs."""
    n = z1.shape[0]
    views = []
    for k in range(n):
        views += [z1[k], z2[k]]

    def sim(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.dot(u, v) / (u.norm() * v.norm())

    def pair_loss(i: int, j: int) -> torch.Tensor:
        denominator = sum(torch.exp(sim(views[i], views[k]) / tau) for k in range(2 * n) if k != i)
        return -torch.log(torch.exp(sim(views[i], views[j]) / tau) / denominator)

    total = sum(pair_loss(2 * k, 2 * k + 1) + pair_loss(2 * k + 1, 2 * k) for k in range(n))
    return total / (2 * n)


@pytest.mark.parametrize("n,dim,tau", [(2, 3, 0.5), (5, 8, 0.1), (8, 4, 1.0)])
def test_matches_paper_definition(n: int, dim: int, tau: float) -> None:
    generator = torch.Generator().manual_seed(n)
    z1 = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    z2 = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    assert torch.allclose(nt_xent_loss(z1, z2, tau), paper_nt_xent(z1, z2, tau))


def test_hand_computed_two_pairs() -> None:
    # Orthonormal pairs: positives have similarity 1, all 2 negatives per anchor similarity 0.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    tau = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 2 * math.exp(0)))
    assert nt_xent_loss(z1, z2, tau).item() == pytest.approx(expected, rel=1e-6)


def test_invariant_to_embedding_scale() -> None:
    z1, z2 = torch.randn(4, 6), torch.randn(4, 6)
    assert torch.allclose(nt_xent_loss(z1, z2, 0.2), nt_xent_loss(3 * z1, 0.5 * z2, 0.2))


def _local_loss_and_grads(rank: int, world: int, z1: torch.Tensor, z2: torch.Tensor):
    n = z1.shape[0] // world
    local1 = z1[rank * n : (rank + 1) * n].clone().requires_grad_()
    local2 = z2[rank * n : (rank + 1) * n].clone().requires_grad_()
    loss = nt_xent_loss(local1, local2, 0.3)
    loss.backward()
    return loss.item(), local1.grad, local2.grad


def test_two_workers_equal_global_batch_loss_and_gradients() -> None:
    """Averaged over 2 gloo workers, per-worker losses and gradients equal the single-process
    loss on the global batch: negatives really come from every worker."""
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    z2 = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    full1, full2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    global_loss = nt_xent_loss(full1, full2, 0.3)
    global_loss.backward()
    assert torch.allclose(global_loss, paper_nt_xent(z1, z2, 0.3))

    results = run_in_gloo_workers(_local_loss_and_grads, 2, z1, z2)

    mean_loss = sum(loss for loss, _, _ in results) / 2
    assert mean_loss == pytest.approx(global_loss.item(), rel=1e-9)
    # The gather sums every worker's gradient into each slice; DDP then averages over workers.
    grad1 = torch.cat([g1 for _, g1, _ in results]) / 2
    grad2 = torch.cat([g2 for _, _, g2 in results]) / 2
    assert torch.allclose(grad1, full1.grad)
    assert torch.allclose(grad2, full2.grad)
