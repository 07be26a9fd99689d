"""Meta-learning across workers: the meta-batch split over 2 gloo workers gives the meta-gradient
of one worker holding every task, and evaluation gathers every rank's per-episode accuracies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprlab.data.episodes import EpisodeSampler, EpisodeSpec
from reprlab.distributed import average_gradients
from reprlab.eval.few_shot import distributed_episode_accuracies
from reprlab.methods import method_class
from reprlab.models.backbones import Conv4
from reprlab.train.sources.episodes import worker_episode_batches

from .gloo import run_in_gloo_workers

LABELS = np.repeat(np.arange(12), 6)
SPEC = EpisodeSpec(ways=3, shots=2, queries=2)


def _images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (LABELS.size, 1, 8, 8), dtype=torch.uint8, generator=generator)


def _method(name: str, args: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return method_class(name)(Conv4(1, width=4), method_class(name).Args(**args)).double()


def _meta_gradient(rank: int, world: int, name: str, args: dict, tasks: int) -> list[np.ndarray]:
    """Gradients after one step of `tasks` global tasks (seeded by task id), averaged as the
    loop averages them: what every worker would hand to its optimiser."""
    torch.set_num_threads(1)
    method = _method(name, args)
    sampler = EpisodeSampler(LABELS, SPEC, seed=5)
    batch = next(
        worker_episode_batches(_images(), sampler, tasks, range(3, 4), 8, torch.device("cpu"))
    )
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    assert batch["support"].shape[0] == tasks // world
    method(batch)["loss"].backward()
    parameters = list(method.parameters())
    average_gradients(parameters)
    return [p.grad.numpy().copy() for p in parameters]


@pytest.mark.parametrize(
    ("name", "args"),
    [("maml", {"ways": 3, "inner_steps": 2}), ("maml", {"ways": 3, "first_order": True})],
)
def test_two_workers_two_tasks_equal_one_worker_four_tasks(name: str, args: dict) -> None:
    alone = _meta_gradient(0, 1, name, args, tasks=4)
    split = run_in_gloo_workers(_meta_gradient, 2, name, args, 4)
    assert any(np.abs(g).max() > 0 for g in alone)
    for rank_grads in split:
        for mine, reference in zip(rank_grads, alone, strict=True):
            np.testing.assert_allclose(mine, reference, rtol=1e-9, atol=1e-12)


def test_one_worker_two_tasks_is_not_four_tasks() -> None:
    """The comparison above can fail: half the meta-batch gives another gradient."""
    four = _meta_gradient(0, 1, "maml", {"ways": 3}, tasks=4)
    two = _meta_gradient(0, 1, "maml", {"ways": 3}, tasks=2)
    assert not all(np.allclose(a, b) for a, b in zip(four, two, strict=True))


def _accuracies(rank: int, world: int, count: int) -> np.ndarray:
    torch.set_num_threads(1)
    method = _method("maml", {"ways": 3}).float()
    sampler = EpisodeSampler(LABELS, SPEC, seed=0)
    return distributed_episode_accuracies(
        method, _images(), sampler, count, image_size=8, device=torch.device("cpu")
    )


def test_evaluation_gathers_every_episode_from_every_rank() -> None:
    alone = _accuracies(0, 1, 11)
    gathered = run_in_gloo_workers(_accuracies, 2, 11)
    assert not np.isnan(alone).any() and alone.shape == (11,)
    for per_rank in gathered:
        np.testing.assert_allclose(per_rank, alone, atol=1e-6)
