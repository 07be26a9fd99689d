"""Two-view SimCLR augmentation throughput delivered to a training loop: reprlab's Ray Data
pipeline against a plain torch DataLoader (2 workers, torchvision per-sample transforms on PIL
images), on the same shards and the same cores. Prints images/s for each and the ratio.

It also times the augmentation alone on one thread against kornia's batched per-sample
augmentation with the same parameters (RGB input, so every colour op runs), the library
reprlab would otherwise use: the reason reprlab/augment/ is hand-written.

    .venv/bin/python benchmarks/data_pipeline.py [--dataset mnist5k] [--epochs 5]
"""

from __future__ import annotations

import argparse
import time

import kornia.augmentation as K
import numpy as np
import pyarrow.parquet as pq
import ray
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from reprlab.augment import SimCLRPolicy
from reprlab.augment.ops import to_float_nchw
from reprlab.data.handle import DatasetHandle
from reprlab.data.pipeline import view_dataset


class ShardImages(Dataset):
    """The same Parquet shards, one PIL image per item, augmented twice per sample."""

    def __init__(self, paths: list[str], shape: tuple[int, int, int], transform) -> None:
        table = pq.ParquetDataset(paths).read(columns=["image", "label"])
        self.blobs = table.column("image").to_pylist()
        self.labels = table.column("label").to_pylist()
        self.shape, self.transform = shape, transform

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index: int):
        height, width, channels = self.shape
        pixels = np.frombuffer(self.blobs[index], dtype=np.uint8).reshape(height, width, channels)
        image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)
        return self.transform(image), self.transform(image), self.labels[index]


def torchvision_views(policy: SimCLRPolicy) -> T.Compose:
    """The per-sample torchvision equivalent of `policy`."""
    return T.Compose(
        [
            T.RandomResizedCrop(policy.size, scale=policy.crop_scale, ratio=policy.crop_ratio),
            T.RandomHorizontalFlip(policy.hflip_p),
            T.RandomApply(
                [T.ColorJitter(policy.brightness, policy.contrast, policy.saturation, policy.hue)],
                p=policy.jitter_p,
            ),
            T.RandomGrayscale(policy.grayscale_p),
            T.PILToTensor(),
        ]
    )


def measure(epochs: int, epoch_batches) -> float:
    """Images/s over `epochs` passes, the first batch of the first pass excluded (warm-up)."""
    images, started = 0, None
    for _ in range(epochs):
        for batch in epoch_batches():
            if started is None:
                started = time.perf_counter()
                continue
            images += len(batch[-1] if isinstance(batch, list | tuple) else batch["label"])
    return images / (time.perf_counter() - started)


def kornia_views(policy: SimCLRPolicy) -> torch.nn.Module:
    """kornia's batched equivalent of `policy` (float input in [0, 1])."""
    return K.AugmentationSequential(
        K.RandomResizedCrop(
            (policy.size, policy.size), scale=policy.crop_scale, ratio=policy.crop_ratio
        ),
        K.RandomHorizontalFlip(p=policy.hflip_p),
        K.ColorJitter(
            policy.brightness, policy.contrast, policy.saturation, policy.hue, p=policy.jitter_p
        ),
        K.RandomGrayscale(p=policy.grayscale_p),
    )


def augmentation_only(images: np.ndarray, policy: SimCLRPolicy, repeats: int = 3) -> tuple:
    """Two-view images/s of reprlab's policy and of kornia's, one thread, RGB batches of 1024."""
    torch.set_num_threads(1)
    batch = torch.from_numpy(images[:1024]).expand(-1, -1, -1, 3).contiguous()
    generator = torch.Generator().manual_seed(0)
    kornia_policy = kornia_views(policy)

    def ours() -> None:
        policy.view_pair(batch, generator)

    def theirs() -> None:
        floats = to_float_nchw(batch)
        kornia_policy(floats)
        kornia_policy(floats)

    rates = []
    for run in (ours, theirs):
        run()
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        rates.append(repeats * len(batch) / (time.perf_counter() - started))
    torch.set_num_threads(2)
    return tuple(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    dataset = DatasetHandle.open_or_ingest(args.dataset)
    shape = dataset.image_shape
    paths = dataset.shard_paths("train")
    policy = SimCLRPolicy().at_size(shape[0])

    loader = DataLoader(
        ShardImages(paths, shape, torchvision_views(policy)),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
    )
    baseline = measure(args.epochs, lambda: loader)
    print(f"DataLoader (2 workers, torchvision per sample): {baseline:,.0f} images/s")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    views = view_dataset(dataset, "train", policy)
    platform = measure(args.epochs, lambda: views.iter_torch_batches(batch_size=args.batch_size))
    print(f"reprlab Ray Data pipeline (batched views):      {platform:,.0f} images/s")
    print(f"ratio reprlab / DataLoader: {platform / baseline:.2f}x")

    images, _ = dataset.read("train")
    ours, theirs = augmentation_only(images, policy)
    print(
        f"augmentation alone, 1 thread, RGB: reprlab {ours:,.0f} images/s, "
        f"kornia {theirs:,.0f} images/s, ratio {ours / theirs:.2f}x"
    )


if __name__ == "__main__":
    main()
