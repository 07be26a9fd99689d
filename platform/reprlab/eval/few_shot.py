"""Few-shot evaluation: per-episode accuracies of a method (its own adaptation for meta-learners,
nearest prototype on frozen features otherwise), gathered from every worker, and their mean with
a 95 % confidence interval; plus the frozen-feature protocols of `reprlab eval`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from reprlab.augment.ops import resized
from reprlab.config import FewShotEvalConfig
from reprlab.data.episodes import EpisodeSampler, EpisodeSpec, episode_batch
from reprlab.distributed import gather_objects, world_info
from reprlab.eval.features import extract_features
from reprlab.methods import EpisodicMethod, Method
from reprlab.models.heads import prototype_logits

EVAL_TASKS_PER_CHUNK = 8


def mean_ci95(accuracies: np.ndarray) -> tuple[float, float]:
    """Mean accuracy and the half-width of its 95 % normal confidence interval,
    1.96 * sample std / sqrt(episodes), as reported by Snell et al. and Finn et al."""
    values = np.asarray(accuracies, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size))


def prototype_accuracy(
    support: torch.Tensor,
    support_label: torch.Tensor,
    query: torch.Tensor,
    query_label: torch.Tensor,
) -> torch.Tensor:
    """[T] query accuracy of nearest-prototype classification (squared Euclidean distance to
    the mean support feature of each class) on features [T, n, D] with labels 0..N-1."""
    predicted = prototype_logits(support, support_label, query).argmax(-1)
    return (predicted == query_label).float().mean(-1)


def linear_head_accuracy(
    support: torch.Tensor,
    support_label: torch.Tensor,
    query: torch.Tensor,
    query_label: torch.Tensor,
    steps: int = 100,
    lr: float = 0.01,
    weight_decay: float = 1e-3,
) -> torch.Tensor:
    """[T] query accuracy of a linear classifier trained on each episode's support features
    (Chen et al. 2019, "A Closer Look at Few-shot Classification": the Baseline). Features are
    L2-normalised so one learning rate suits every encoder; all T heads train at once."""
    ways = int(support_label.max()) + 1
    support, query = F.normalize(support.float(), dim=-1), F.normalize(query.float(), dim=-1)
    tasks, _, dim = support.shape
    weight = torch.zeros(tasks, dim, ways, requires_grad=True)
    bias = torch.zeros(tasks, 1, ways, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            logits = support @ weight + bias
            loss = F.cross_entropy(logits.flatten(0, 1), support_label.flatten()) * tasks
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = (query @ weight + bias).argmax(-1)
    return (predicted == query_label).float().mean(-1)


def _embed_episodes(method: Method, batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    images = batch[key]
    return method.embed(images.flatten(0, 1)).float().view(*images.shape[:2], -1)


def method_episode_accuracy(method: Method, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[T] accuracy on float episodes: a meta-learner adapts its own way; any other encoder is
    scored by nearest prototype on its frozen features."""
    if isinstance(method, EpisodicMethod):
        return method.episode_accuracy(batch).detach().cpu()
    with torch.no_grad():
        support, query = (
            _embed_episodes(method, batch, "support"),
            _embed_episodes(method, batch, "query"),
        )
        return prototype_accuracy(
            support, batch["support_label"], query, batch["query_label"]
        ).cpu()


def float_episodes(
    batch: dict[str, torch.Tensor], image_size: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """uint8 episode images -> float [0, 1] on `device`, resized to image_size when needed."""
    out = {}
    for key, value in batch.items():
        value = value.to(device)
        if value.dtype == torch.uint8:
            images = resized(value.flatten(0, 1).float().div_(255), image_size)
            value = images.view(*value.shape[:2], *images.shape[1:])
        out[key] = value
    return out


def distributed_episode_accuracies(
    method: Method,
    images: torch.Tensor,
    sampler: EpisodeSampler,
    count: int,
    *,
    image_size: int,
    device: torch.device,
) -> np.ndarray:
    """Accuracy of episodes 0..count-1 of `sampler`, in episode order. Each worker scores the
    episodes i with i % world == rank; the per-episode accuracies of all ranks are gathered
    (not averaged per rank) so the confidence interval is over every episode."""
    rank, world = world_info()
    was_training = method.training
    method.eval()
    mine = list(range(rank, count, world))
    scores = []
    for start in range(0, len(mine), EVAL_TASKS_PER_CHUNK):
        chunk = mine[start : start + EVAL_TASKS_PER_CHUNK]
        batch = float_episodes(episode_batch(images, sampler, chunk), image_size, device)
        scores.append(method_episode_accuracy(method, batch))
    method.train(was_training)
    local = (mine, torch.cat(scores).tolist() if scores else [])
    accuracies = np.full(count, np.nan)
    for indices, values in gather_objects(local):
        accuracies[indices] = values
    return accuracies


def fewshot_metrics(
    method: Method,
    images: torch.Tensor,
    labels: np.ndarray,
    settings: FewShotEvalConfig,
    prefix: str,
    count: int,
    image_size: int,
    device: torch.device,
) -> dict[str, float]:
    """`fewshot/<prefix>_<N>way_<K>shot_acc` and `..._ci95` for every K of `settings`, on the
    first `count` fixed episodes of one split."""
    metrics = {}
    for shots in settings.shots:
        spec = EpisodeSpec(settings.ways, shots, settings.queries)
        sampler = EpisodeSampler(labels, spec, settings.seed, where=f"{prefix} split")
        accuracies = distributed_episode_accuracies(
            method, images, sampler, count, image_size=image_size, device=device
        )
        mean, half_width = mean_ci95(accuracies)
        name = f"fewshot/{prefix}_{settings.ways}way_{shots}shot"
        metrics[f"{name}_acc"], metrics[f"{name}_ci95"] = mean, half_width
    return metrics


def match_channels(images: np.ndarray, in_chans: int) -> np.ndarray:
    """uint8 [n, H, W, C] images with the encoder's channel count: grey repeated to RGB, RGB
    averaged to grey, so an encoder of one dataset can be scored on another."""
    channels = images.shape[-1]
    if channels == in_chans:
        return images
    if channels == 1:
        return np.repeat(images, in_chans, axis=-1)
    if in_chans == 1:
        return images.mean(axis=-1, keepdims=True).round().astype(np.uint8)
    raise ValueError(f"cannot feed {channels}-channel images to a {in_chans}-channel encoder")


def frozen_fewshot(
    features: torch.Tensor,
    labels: np.ndarray,
    *,
    ways: int,
    shots: list[int],
    queries: int,
    episodes: int,
    seed: int,
    chunk: int = 100,
) -> dict[str, float]:
    """Few-shot accuracy of frozen features [n, D] on the fixed episodes (seed, 0..episodes-1):
    `<N>way_<K>shot_proto_acc` (nearest prototype) and `..._linear_acc` (linear head trained on
    the support set), each with its `_ci95`."""
    metrics = {}
    for k in shots:
        sampler = EpisodeSampler(labels, EpisodeSpec(ways, k, queries), seed)
        scores: dict[str, list[torch.Tensor]] = {"proto": [], "linear": []}
        for start in range(0, episodes, chunk):
            batch = episode_batch(
                features, sampler, list(range(start, min(start + chunk, episodes)))
            )
            args = (batch["support"], batch["support_label"], batch["query"], batch["query_label"])
            scores["proto"].append(prototype_accuracy(*args))
            scores["linear"].append(linear_head_accuracy(*args))
        for name, parts in scores.items():
            mean, half_width = mean_ci95(torch.cat(parts).numpy())
            metrics[f"{ways}way_{k}shot_{name}_acc"] = mean
            metrics[f"{ways}way_{k}shot_{name}_ci95"] = half_width
    return metrics


def fewshot_of_encoder(
    method: Method,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    in_chans: int,
    image_size: int,
    ways: int,
    shots: list[int],
    queries: int,
    episodes: int,
    seed: int,
) -> dict[str, float]:
    """A trained encoder, frozen, scored on fixed episodes of a split of any dataset: images
    matched to its channels and input size, embedded once, then `frozen_fewshot`."""
    features = extract_features(method, match_channels(images, in_chans), image_size)
    return frozen_fewshot(
        torch.from_numpy(features),
        labels,
        ways=ways,
        shots=shots,
        queries=queries,
        episodes=episodes,
        seed=seed,
    )
