"""N-way K-shot Q-query episodes drawn from the classes of one split of an ingested dataset.

Episode `i` of a sampler depends only on (seed, i), never on which worker draws it or in which
order, so a meta-batch split across workers holds the same tasks as on one worker, and the
fixed evaluation episodes are the same in every run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class EpisodeSpec:
    """The shape of an episode: N classes, K support and Q query images per class."""

    ways: int
    shots: int
    queries: int


@dataclass(frozen=True)
class Episode:
    """Row indices into the split (support and query, class-major), the N class labels and the
    quarter turns each class's images get (all 0 unless the sampler rotates classes)."""

    support: np.ndarray
    query: np.ndarray
    classes: np.ndarray
    quarter_turns: np.ndarray


class EpisodeSampler:
    """Seeded episodes over the labels of one split; each class needs K + Q rows. With
    `rotate_classes`, each class of an episode is turned by a random multiple of 90 degrees,
    which makes it a new class (the Omniglot augmentation of Vinyals et al. and Snell et al.)."""

    def __init__(
        self,
        labels: np.ndarray,
        spec: EpisodeSpec,
        seed: int,
        where: str = "split",
        rotate_classes: bool = False,
    ):
        self.spec, self.seed, self.rotate_classes = spec, seed, rotate_classes
        labels = np.asarray(labels)
        classes, counts = np.unique(labels[labels >= 0], return_counts=True)
        per_episode = spec.shots + spec.queries
        self.classes = classes[counts >= per_episode]
        if self.classes.size < spec.ways:
            raise ValueError(
                f"{where}: {self.classes.size} of {classes.size} classes have >= "
                f"{per_episode} images (shots {spec.shots} + queries {spec.queries}); a "
                f"{spec.ways}-way episode needs {spec.ways}"
            )
        self.rows_by_class = {int(c): np.flatnonzero(labels == c) for c in self.classes}

    def episode(self, index: int) -> Episode:
        """Episode number `index` (any non-negative int): same seed and index, same episode."""
        rng = np.random.default_rng([self.seed, index])
        spec = self.spec
        classes = rng.choice(self.classes, size=spec.ways, replace=False)
        rows = np.stack(
            [
                rng.choice(
                    self.rows_by_class[int(c)], size=spec.shots + spec.queries, replace=False
                )
                for c in classes
            ]
        )
        turns = rng.integers(0, 4, size=spec.ways) if self.rotate_classes else np.zeros(spec.ways)
        return Episode(
            support=rows[:, : spec.shots].reshape(-1),
            query=rows[:, spec.shots :].reshape(-1),
            classes=classes,
            quarter_turns=turns.astype(np.int64),
        )


def episodes_problem(manifest: dict, split: str, spec: EpisodeSpec) -> str | None:
    """Why `split` of a dataset cannot yield `spec` episodes (from the manifest's per-class
    counts, so a job learns it before Ray starts), or None."""
    per_episode = spec.shots + spec.queries
    per_class = manifest["splits"][split].get("per_class", {})
    enough = sum(1 for count in per_class.values() if count >= per_episode)
    if enough >= spec.ways:
        return None
    return (
        f"split '{split}' has {enough} classes with >= {per_episode} images (shots {spec.shots} "
        f"+ queries {spec.queries}); a {spec.ways}-way episode needs {spec.ways}"
    )


def episode_batch(
    images: torch.Tensor, sampler: EpisodeSampler, indices: list[int]
) -> dict[str, torch.Tensor]:
    """The episodes `indices` stacked as one batch (EpisodicMethod's format): uint8 `support`
    [T, N*K, C, H, W], `query` [T, N*Q, C, H, W] and labels 0..N-1 in episode order."""
    spec = sampler.spec
    episodes = [sampler.episode(i) for i in indices]
    support = np.stack([e.support for e in episodes])
    query = np.stack([e.query for e in episodes])
    tasks = len(indices)
    support_x, query_x = images[torch.from_numpy(support)], images[torch.from_numpy(query)]
    if sampler.rotate_classes:
        turns = torch.from_numpy(np.stack([e.quarter_turns for e in episodes]))
        support_x = _rotate_per_class(support_x, turns.repeat_interleave(spec.shots, dim=1))
        query_x = _rotate_per_class(query_x, turns.repeat_interleave(spec.queries, dim=1))
    return {
        "support": support_x,
        "query": query_x,
        "support_label": torch.arange(spec.ways).repeat_interleave(spec.shots).repeat(tasks, 1),
        "query_label": torch.arange(spec.ways).repeat_interleave(spec.queries).repeat(tasks, 1),
    }


def _rotate_per_class(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """[T, n, C, H, W] images, each turned by its own count of quarter turns [T, n]."""
    out = images.clone()
    for k in (1, 2, 3):
        chosen = turns == k
        out[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
    return out
