"""Clustering evaluation: k-means on frozen embeddings scored against the labels by
Hungarian-matched accuracy, NMI and ARI (the unsupervised protocol of e.g. SCAN and DEC)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def clustering_accuracy(true_labels: np.ndarray, cluster_ids: np.ndarray) -> float:
    """Fraction of items whose cluster maps to their label under the one-to-one cluster-to-label
    assignment that agrees most (Hungarian matching); ids on either side may be any ints."""
    # scipy imported here: only the driver evaluates, Train workers skip its import
    from scipy.optimize import linear_sum_assignment

    true_ids = np.unique(np.asarray(true_labels), return_inverse=True)[1].ravel()
    cluster_idx = np.unique(np.asarray(cluster_ids), return_inverse=True)[1].ravel()
    if true_ids.shape != cluster_idx.shape:
        raise ValueError(f"{true_ids.size} labels but {cluster_idx.size} cluster ids")
    contingency = np.zeros((cluster_idx.max() + 1, true_ids.max() + 1), dtype=np.int64)
    np.add.at(contingency, (cluster_idx, true_ids), 1)
    rows, cols = linear_sum_assignment(contingency, maximize=True)
    return float(contingency[rows, cols].sum() / true_ids.size)


def clustering_metrics(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    seed: int,
    *,
    normalize: bool = True,
) -> dict[str, float]:
    """Accuracy, NMI and ARI of k-means (k = number of distinct labels, 10 restarts) on [N, D]
    embeddings; rows are L2-normalised first by default because SSL embeddings are compared by
    cosine, so Euclidean k-means on unit rows clusters by angle and ignores the norm."""
    # sklearn imported here: only the driver evaluates, Train workers skip its import
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    x = torch.as_tensor(embeddings).detach().cpu().float()
    if normalize:
        x = F.normalize(x, dim=1)
    labels = np.asarray(labels)
    kmeans = KMeans(n_clusters=len(np.unique(labels)), n_init=10, random_state=seed)
    cluster_ids = kmeans.fit_predict(x.numpy())
    return {
        "acc": clustering_accuracy(labels, cluster_ids),
        "nmi": float(normalized_mutual_info_score(labels, cluster_ids)),
        "ari": float(adjusted_rand_score(labels, cluster_ids)),
    }
