"""Pictures logged to MLflow, what people would rather see than read: drawn from plain arrays
and tensors, so any layer can hand them over."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure


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


def class_rows_figure(views: np.ndarray, labels: np.ndarray, per_class: int) -> Figure:
    """An m-per-class batch, uint8 [P*m, C, S, S] class-major: one row per class, its m views,
    the row titled with the class id."""
    classes = len(views) // per_class
    columns = min(per_class, 12)
    figure = Figure(figsize=(columns * 0.9, classes * 0.9 + 0.2))
    axes = figure.subplots(classes, columns, squeeze=False)
    for row in range(classes):
        for column in range(columns):
            pixels = views[row * per_class + column].transpose(1, 2, 0)
            axis = axes[row][column]
            axis.imshow(
                pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels,
                cmap="gray",
                vmin=0,
                vmax=255,
            )
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row][0].set_ylabel(f"class {labels[row * per_class]}", fontsize=7)
    figure.tight_layout()
    return figure


def image_grid_figure(images: torch.Tensor, title: str) -> Figure:
    """Float [K, C, h, w] images (components, centroids, reconstructions) in a grid of up to 8
    columns, each scaled to its own range."""
    columns = min(8, len(images))
    rows = -(-len(images) // columns)
    figure = Figure(figsize=(columns * 0.9, rows * 0.9 + 0.4))
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_xticks([])
        axis.set_yticks([])
        if index >= len(images):
            axis.set_axis_off()
            continue
        pixels = images[index].float().permute(1, 2, 0)
        pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min()).clamp_min(1e-12)
        axis.imshow(
            pixels.squeeze(-1).numpy() if pixels.shape[-1] == 1 else pixels.numpy(), cmap="gray"
        )
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def metric_against_values_figure(
    values: dict[str, list[float]], metric: list[float], metric_name: str, log_keys: set[str]
) -> Figure:
    """One scatter per searched key: each trial's `metric` against its value of the key (a log
    axis for the keys in `log_keys`), the curve a search is run to find."""
    keys = list(values)
    figure = Figure(figsize=(4 * len(keys), 3.2))
    axes = figure.subplots(1, len(keys), squeeze=False)[0]
    for axis, key in zip(axes, keys, strict=True):
        pairs = sorted(zip(values[key], metric, strict=True))
        style = "o-" if len(keys) == 1 else "o"
        axis.plot([x for x, _ in pairs], [y for _, y in pairs], style, alpha=0.8)
        if key in log_keys:
            axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.set_ylabel(metric_name)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def learning_curves_figure(
    curves: dict[str, tuple[list[float], list[float]]], metric: str
) -> Figure:
    """Every trial's `metric` over epochs on one plot, labelled by trial."""
    figure = Figure(figsize=(6.5, 4))
    axis = figure.subplots()
    for label, (epochs, values) in curves.items():
        axis.plot(epochs, values, marker=".", label=label)
    axis.set_xlabel("epoch")
    axis.set_ylabel(metric)
    axis.grid(alpha=0.3)
    if len(curves) <= 16:
        axis.legend(fontsize=6)
    figure.tight_layout()
    return figure


def accuracy_against_labels_figure(
    curves: dict[str, dict[int, float]], all_labels: int | None = None
) -> Figure:
    """Held-out accuracy against labels per class (log axis), one line per method; the point at
    `all_labels` is every train label and is ticked 'all'."""
    figure = Figure(figsize=(6.5, 4))
    axis = figure.subplots()
    for label, points in curves.items():
        xs = sorted(points)
        axis.plot(xs, [100 * points[x] for x in xs], marker="o", label=label)
    ticks = sorted({x for points in curves.values() for x in points})
    axis.set_xscale("log")
    axis.set_xticks(ticks, ["all" if x == all_labels else str(x) for x in ticks])
    axis.minorticks_off()
    axis.set_xlabel("labels per class")
    axis.set_ylabel("held-out accuracy (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
