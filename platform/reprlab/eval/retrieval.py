"""Open-set retrieval metrics on cosine similarity, as in Musgrave et al. 2020, "A Metric
Learning Reality Check": every item queries all the others, so embeddings from several workers
must be gathered first (`reprlab.distributed.gather_rows`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _query_scores(
    hits: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Per-query metrics [Q] from hits [Q, depth] (neighbour of rank i is same class) and R [Q]
    (other items of the query's class)."""
    ranks = torch.arange(1, hits.shape[1] + 1, device=hits.device)
    within_r = hits & (ranks <= relevant[:, None])
    precision_at_rank = hits.cumsum(dim=1).double() / ranks
    scores = {
        "precision_at_1": hits[:, 0].double(),
        "r_precision": within_r.sum(dim=1) / relevant.double(),
        "map_at_r": (precision_at_rank * within_r).sum(dim=1) / relevant,
    }
    for k in ks:
        scores[f"recall_at_{k}"] = hits[:, :k].any(dim=1).double()
    return scores


def retrieval_metrics(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    ks: Sequence[int] = (1, 2, 4, 8),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Precision@1, R-Precision, MAP@R and Recall@k (a same-class item among the k nearest) of
    [N, D] embeddings with int labels [N], averaged over queries whose class has another item.

    Queries are scored chunk_size at a time, so memory is O(chunk_size * N) rather than N^2."""
    if min(ks, default=1) < 1:
        raise ValueError(f"ks must be positive, got {tuple(ks)}")
    x = F.normalize(torch.as_tensor(embeddings).detach().float(), dim=1)
    _, classes, counts = torch.unique(
        torch.as_tensor(labels, device=x.device), return_inverse=True, return_counts=True
    )
    relevant = counts[classes] - 1
    queries = torch.nonzero(relevant > 0).flatten()
    if queries.numel() == 0:
        raise ValueError("no class has two items: retrieval metrics are undefined")
    depth = min(len(x) - 1, max([int(relevant.max()), *ks]))
    totals: dict[str, float] = {}
    for chunk in queries.split(chunk_size):
        sims = x[chunk] @ x.T
        sims[torch.arange(len(chunk), device=x.device), chunk] = -torch.inf
        neighbours = sims.topk(depth, dim=1).indices
        hits = classes[neighbours] == classes[chunk, None]
        for name, values in _query_scores(hits, relevant[chunk], ks).items():
            totals[name] = totals.get(name, 0.0) + float(values.sum())
    return {name: total / len(queries) for name, total in totals.items()}
