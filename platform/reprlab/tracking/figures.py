"""Pictures logged to MLflow: what people would rather see than read."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch
from matplotlib.figure import Figure

from reprlab.data.augment import ViewPolicy, two_views
from reprlab.data.episodes import EpisodeSampler, EpisodeSpec, episode_batch, split_images
from reprlab.data.shards import read_split


def view_pairs_figure(originals: np.ndarray, view1: np.ndarray, view2: np.ndarray) -> Figure:
    """A grid with one row per image: the original and its two augmented views."""
    rows = len(originals)
    figure = Figure(figsize=(3 * 1.3, rows * 1.3))
    axes = figure.subplots(rows, 3, squeeze=False)
    for row in range(rows):
        for column, (title, image) in enumerate(
            (("original", originals[row]), ("view 1", view1[row]), ("view 2", view2[row]))
        ):
            axis = axes[row][column]
            axis.imshow(
                image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255
            )
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=8)
    figure.tight_layout()
    return figure


def policy_figure(
    dataset_dir: Path, split: str, policy: ViewPolicy, pairs: int, seed: int = 0
) -> Figure:
    """The first `pairs` images of a split, each with its two views by `policy`."""
    images, _, _ = read_split(dataset_dir, split)
    originals = images[:pairs]
    view1, view2 = two_views(
        torch.from_numpy(originals), policy, torch.Generator().manual_seed(seed)
    )
    return view_pairs_figure(
        originals, view1.permute(0, 2, 3, 1).numpy(), view2.permute(0, 2, 3, 1).numpy()
    )


def log_view_pairs(dataset_dir: Path, split: str, policy: ViewPolicy, pairs: int) -> None:
    """Log `augment/view_pairs.png`: the first `pairs` images of a split and two views each."""
    mlflow.log_figure(policy_figure(dataset_dir, split, policy, pairs), "augment/view_pairs.png")


def episode_figure(batch: dict[str, torch.Tensor], title: str) -> Figure:
    """One episode of an `episode_batch`: a row per class, its support then its query images."""
    support, query = batch["support"][0], batch["query"][0]
    ways = int(batch["support_label"].max()) + 1
    support, query = (
        support.view(ways, -1, *support.shape[1:]),
        query.view(ways, -1, *query.shape[1:]),
    )
    shots, queries = support.shape[1], query.shape[1]
    columns = shots + queries
    figure = Figure(figsize=(columns * 0.9, ways * 0.9 + 0.4))
    axes = figure.subplots(ways, columns, squeeze=False)
    for row in range(ways):
        for column in range(columns):
            image = support[row, column] if column < shots else query[row, column - shots]
            axis = axes[row][column]
            pixels = image.permute(1, 2, 0).numpy()
            axis.imshow(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels, cmap="gray")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title("support" if column < shots else "query", fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def log_episodes(dataset_dir: Path, split: str, spec: EpisodeSpec, rotate: bool, seed: int) -> None:
    """Log `episodes/train_episode.png`: the first training episode the run draws."""
    images, labels = split_images(dataset_dir, split)
    sampler = EpisodeSampler(labels, spec, seed, rotate_classes=rotate)
    batch = episode_batch(images, sampler, [0])
    title = f"{split}: {spec.ways}-way {spec.shots}-shot, {spec.queries} queries per class"
    mlflow.log_figure(episode_figure(batch, title), "episodes/train_episode.png")
