"""Helpers the tests of the semi-supervised methods share: plain-Python softmax and cross-entropy,
a tiny Conv4 method with its batches, and the checks of a training step's labelled outputs."""

from __future__ import annotations

import math
from typing import Any, TypeVar

import pytest
import torch

from reprlab.methods.ema_classifier import EMAClassifier
from reprlab.models.backbones import Conv4

M = TypeVar("M", bound=EMAClassifier)


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def cross_entropy(row: list[float], target: int) -> float:
    return -row[target] + math.log(sum(math.exp(x) for x in row))


def make_method(method: type[M], **args: Any) -> M:
    """`method` on a width-8 Conv4 of 1-channel images, for 3 classes."""
    return method(Conv4(in_chans=1, width=8), method.Args(num_classes=3, **args))


def make_batch(seed: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """4 labelled 12x12 images with labels in 0..2, and 8 unlabelled ones in two views
    (Pseudo-Label reads only `unlabelled_weak`)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "labelled": torch.rand(4, 1, 12, 12, generator=generator, dtype=dtype),
        "label": torch.randint(0, 3, (4,), generator=generator),
        "unlabelled_weak": torch.rand(8, 1, 12, 12, generator=generator, dtype=dtype),
        "unlabelled_strong": torch.rand(8, 1, 12, 12, generator=generator, dtype=dtype),
    }


def assert_labelled_outputs(
    output: dict[str, torch.Tensor],
    logits: list[list[float]],
    labels: list[int],
    features: torch.Tensor,
) -> None:
    """A training step's `train_acc` is the accuracy of the first len(labels) rows of `logits`,
    its `features` those rows of `features`, and only its `loss` carries a gradient."""
    rows = len(labels)
    correct = sum(logits[i].index(max(logits[i])) == labels[i] for i in range(rows))
    assert output["train_acc"].item() == pytest.approx(correct / rows)
    torch.testing.assert_close(output["features"], features[:rows])
    assert output["loss"].requires_grad
    assert not any(value.requires_grad for key, value in output.items() if key != "loss")
