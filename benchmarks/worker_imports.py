"""What a new Ray process pays to import reprlab's worker code before it can train: a Tune
trial, its TrainController and every Train worker unpickle `reprlab.train.loop` first. Each
module is imported in a fresh interpreter, alternating, and the median wall time is compared
with `import torch` measured in the same command.

    .venv/bin/python benchmarks/worker_imports.py [--repeats 5]

The libraries only the driver or some jobs need (timm for ViT/ResNet backbones, matplotlib for
pictures, sklearn for the final probe) are imported where used, not at module level; their own
rows show what each would add to every process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

MODULES = (
    "torch",
    "reprlab.train.loop",
    "reprlab.data.pipeline",
    "timm",
    "matplotlib.figure",
    "sklearn.linear_model",
)


def import_seconds(module: str) -> float:
    """Wall time of `python -c "import module"` in a fresh interpreter."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {module: [] for module in MODULES}
    for _ in range(args.repeats):
        for module in MODULES:
            times[module].append(import_seconds(module))
    baseline = statistics.median(times["torch"])
    print(f"{'import':<24}{'median s':>10}{'x torch':>10}")
    for module, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{module:<24}{median:>10.2f}{median / baseline:>10.2f}")


if __name__ == "__main__":
    main()
