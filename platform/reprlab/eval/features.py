"""Frozen-encoder features of an ingested split, and the evaluation table of a run."""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain

import numpy as np
import torch

from reprlab.augment.ops import resized, to_float_nchw
from reprlab.config import JobConfig
from reprlab.data.handle import DatasetHandle
from reprlab.eval.clustering import clustering_metrics
from reprlab.eval.knn import knn_accuracy
from reprlab.eval.linear_probe import linear_probe_accuracy
from reprlab.eval.retrieval import retrieval_metrics
from reprlab.methods import Method


@torch.no_grad()
def _outputs(
    apply: Callable[[torch.Tensor], torch.Tensor],
    method: Method,
    images: np.ndarray,
    image_size: int,
    batch_size: int = 512,
) -> torch.Tensor:
    """`apply` (a method's embed or classify) over uint8 [N,H,W,C] images resized to
    image_size, in eval mode and in batches, as float32 on the CPU."""
    method.eval()
    tensors = chain(method.parameters(), method.buffers())  # fitted encoders hold buffers only
    device = next(tensors, torch.empty(0)).device  # raw pixels hold neither: the CPU
    chunks = []
    for start in range(0, len(images), batch_size):
        x = to_float_nchw(torch.from_numpy(images[start : start + batch_size])).to(device)
        chunks.append(apply(resized(x, image_size)).float().cpu())
    return torch.cat(chunks)


def extract_features(method: Method, images: np.ndarray, image_size: int) -> np.ndarray:
    """`method.embed` of uint8 [N,H,W,C] images (resized to image_size when they differ), in
    eval mode, as float32 [N, D]."""
    return _outputs(method.embed, method, images, image_size).numpy()


def embedding_spaces(method: Method, images: np.ndarray, image_size: int) -> dict[str, np.ndarray]:
    """The spaces retrieval and clustering score, by metric-key prefix: `embed`'s features
    (""), and the loss's own embedding ("projection_") when the method has a projection head:
    a contrastive projection can cluster by class where the features do not."""
    spaces = {"": extract_features(method, images, image_size)}
    head = method.projection_head()
    if head is not None:
        projected = _outputs(lambda x: head(method.backbone(x)), method, images, image_size)
        spaces["projection_"] = projected.numpy()
    return spaces


def classifier_accuracy(
    method: Method, images: np.ndarray, labels: np.ndarray, image_size: int
) -> float:
    """Accuracy of `method.classify` (a method trained with labels) on uint8 [N,H,W,C] images."""
    predicted = _outputs(method.classify, method, images, image_size).argmax(dim=1).numpy()
    return float((predicted == labels).mean())


def evaluate_encoder(method: Method, dataset: DatasetHandle, job: JobConfig) -> dict[str, float]:
    """Linear-probe and weighted-kNN accuracy of the frozen encoder, fitted on the train split
    (every label: a measure of the representation), and the accuracy of a method that classifies,
    all scored on the held-out split; retrieval and clustering metrics of the frozen features
    of `eval.retrieval_split` (default: the held-out split), and of its projection
    (`eval/projection_*`) when the method has one."""
    test_images, test_labels = dataset.read(job.data.eval_split)
    metrics: dict[str, float] = {}
    if method.classifies:
        metrics["eval/classifier_acc"] = classifier_accuracy(
            method, test_images, test_labels, job.data.image_size
        )
    size = job.data.image_size
    if job.eval.linear_probe or job.eval.knn:
        train_images, train_labels = dataset.read(job.data.train_split)
        train_x = extract_features(method, train_images, size)
        test_x = extract_features(method, test_images, size)
        if job.eval.linear_probe:
            metrics["eval/linear_probe_acc"] = linear_probe_accuracy(
                train_x, train_labels, test_x, test_labels
            )
        if job.eval.knn:
            metrics["eval/knn_acc"] = knn_accuracy(
                train_x, train_labels, test_x, test_labels, job.eval.knn_k, job.eval.knn_temperature
            )
    if job.eval.retrieval or job.eval.clustering:
        images, labels = dataset.read(job.eval.retrieval_split or job.data.eval_split)
        for prefix, features in embedding_spaces(method, images, size).items():
            scores = embedding_metrics(
                features,
                labels,
                retrieval=job.eval.retrieval,
                clustering=job.eval.clustering,
                seed=job.seed,
            )
            metrics |= {f"eval/{prefix}{key}": value for key, value in scores.items()}
    return metrics


def embedding_metrics(
    features: np.ndarray, labels: np.ndarray, *, retrieval: bool, clustering: bool, seed: int
) -> dict[str, float]:
    """What the frozen features of one split show without a classifier: `retrieval_*`
    (Precision@1, Recall@k, R-Precision, MAP@R) and `clustering_*` (k-means accuracy, NMI,
    ARI)."""
    metrics: dict[str, float] = {}
    if retrieval:
        scores = retrieval_metrics(features, labels)
        metrics |= {f"retrieval_{key}": value for key, value in scores.items()}
    if clustering:
        scores = clustering_metrics(features, labels, seed)
        metrics |= {f"clustering_{key}": value for key, value in scores.items()}
    return metrics
