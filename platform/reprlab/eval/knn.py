"""Weighted k-nearest-neighbour classifier on cosine similarity (Wu et al. 2018), the kNN
monitor used by SimCLR/MoCo/DINO codebases."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Each test point votes with its k most cosine-similar train points, weighted by
    exp(similarity / temperature); returns held-out accuracy."""
    train = F.normalize(torch.as_tensor(train_x, dtype=torch.float32), dim=1)
    test = F.normalize(torch.as_tensor(test_x, dtype=torch.float32), dim=1)
    labels = torch.as_tensor(train_y, dtype=torch.long)
    num_classes = int(max(labels.max().item(), int(np.max(test_y)))) + 1
    sims, idx = (test @ train.T).topk(min(k, train.shape[0]), dim=1)
    votes = torch.zeros(test.shape[0], num_classes)
    votes.scatter_add_(1, labels[idx], torch.exp(sims / temperature))
    predicted = votes.argmax(dim=1).numpy()
    return float((predicted == np.asarray(test_y)).mean())
