"""Few-shot baselines on the fixed test episodes `reprlab eval` and every run's final evaluation
use (same split, seed and episode ids): raw pixels (nearest class mean) and a random-init conv4.

    .venv/bin/python benchmarks/fewshot_baselines.py [--dataset glyphs] [--episodes 600]

Prints each setting's accuracy with its 95 % interval; trained encoders are scored the same way
by `reprlab eval RUN --protocol fewshot`."""

from __future__ import annotations

import argparse

import torch

from reprlab.data.handle import DatasetHandle
from reprlab.eval.features import extract_features
from reprlab.eval.few_shot import frozen_fewshot
from reprlab.models.backbones import Conv4


class _RandomConv4(torch.nn.Module):
    """The `embed` interface extract_features expects, around an untrained conv4."""

    def __init__(self, in_chans: int, width: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = Conv4(in_chans, width)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="glyphs")
    parser.add_argument("--split", default="test")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--width", type=int, default=64, help="random conv4 filters")
    args = parser.parse_args()
    torch.set_num_threads(2)
    images, labels = DatasetHandle.open(args.dataset).read(args.split)
    encoders = {
        "raw pixels": torch.from_numpy(images.reshape(len(images), -1)).float() / 255,
        f"random conv4-{args.width}": torch.from_numpy(
            extract_features(_RandomConv4(images.shape[-1], args.width), images, images.shape[1])
        ),
    }
    settings = {
        "ways": args.ways,
        "shots": [int(k) for k in args.shots.split(",")],
        "queries": 15,
        "episodes": args.episodes,
        "seed": 0,
    }
    for name, features in encoders.items():
        metrics = frozen_fewshot(features, labels, **settings)
        for k in settings["shots"]:
            for classifier in ("proto", "linear"):
                key = f"{args.ways}way_{k}shot_{classifier}"
                print(
                    f"{name:>18} {args.ways}-way {k}-shot {classifier:>6}: "
                    f"{100 * metrics[key + '_acc']:.1f} % ± {100 * metrics[key + '_ci95']:.1f}"
                )


if __name__ == "__main__":
    main()
