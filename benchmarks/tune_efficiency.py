"""How much training ASHA saves against a full grid, in epochs (not seconds, so the figure does
not depend on the machine): the same grid of SimCLR temperatures, drawn from the shipped
space's bounds, run twice on mnist5k in one command, once to the full epoch budget for every
configuration (FIFO) and once under ASHA. Prints both epoch totals, both best final metrics and
the ratio. Bar: ASHA within 1 point of the grid's best while spending <= 40 % of its epochs.

    python benchmarks/tune_efficiency.py [--configs 12] [--epochs 9]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import ray
import yaml

from reprlab.config import load_job
from reprlab.data.catalog import ingest
from reprlab.tune.run import SweepSummary, run_sweep
from reprlab.tune.spaces import load_space
from reprlab.tune.sweep import SweepSettings, plan_sweep

ROOT = Path(__file__).parents[1]
JOB = ROOT / "jobs" / "quickstart.yaml"
SPACE = ROOT / "tune_spaces" / "simclr_temperature.yaml"
KEY = "method_args.temperature"
MAX_EPOCH_SHARE = 0.40
MAX_GAP_POINTS = 1.0


def grid_space(configs: int, folder: Path) -> Path:
    """The shipped temperature space's bounds as a fixed grid of `configs` log-spaced values."""
    domain = next(d for d in load_space(SPACE, load_job(JOB)).domains if d.key == KEY)
    low, high = domain.args[0], domain.args[1]
    values = [round(float(v), 4) for v in np.geomspace(low, high, configs)]
    # Tune runs a grid in the order given; an ascending order would hand asynchronous ASHA a
    # rising metric (every early trial beats the ones before it), a fixed shuffle does not
    values = [values[i] for i in np.random.default_rng(0).permutation(configs)]
    path = folder / "temperature_grid.yaml"
    text = {
        "description": f"{configs} temperatures log-spaced over {SPACE.name}'s bounds",
        "metric": "online_linear_acc",
        "mode": "max",
        "params": {KEY: {"grid": values}},
    }
    path.write_text(yaml.safe_dump(text))
    return path


def sweep(space: Path, scheduler: str, epochs: int) -> SweepSummary:
    overrides = (
        f"optim.epochs={epochs}",
        "scaling.num_workers=1",  # one worker: each trial reads its views in one order
        "data.data_cpus=0.5",
        "eval.linear_probe=false",
        "eval.knn=false",
        "tracking.log_model=false",
        "tracking.augment_grid_pairs=0",
        "tracking.experiment=bench_tune_efficiency",
    )
    settings = SweepSettings(
        job_file=str(JOB),
        space_file=str(space),
        overrides=overrides,
        scheduler=scheduler,
        search="grid",
        samples=1,
    )
    return run_sweep(plan_sweep(settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=12, help="grid size (>= 8)")
    parser.add_argument("--epochs", type=int, default=9, help="epoch budget per configuration")
    args = parser.parse_args()
    ingest("mnist5k")
    with tempfile.TemporaryDirectory() as folder:
        space = grid_space(args.configs, Path(folder))
        grid = sweep(space, "fifo", args.epochs)
        asha = sweep(space, "asha", args.epochs)
    ray.shutdown()

    grid_epochs = sum(o.epochs for o in grid.outcomes)
    asha_epochs = sum(o.epochs for o in asha.outcomes)
    share = asha_epochs / grid_epochs
    gap = 100 * (grid.best.metric - asha.best.metric)
    print(f"{'config':>12} {'grid':>8} {'asha':>8} {'asha epochs':>12}")
    asha_by_value = {o.values[KEY]: o for o in asha.outcomes}
    for outcome in sorted(grid.outcomes, key=lambda o: o.values[KEY]):
        other = asha_by_value[outcome.values[KEY]]
        shown = "-" if other.state != "finished" else f"{other.metric:.4f}"
        print(f"{outcome.values[KEY]:>12.4g} {outcome.metric:>8.4f} {shown:>8} {other.epochs:>12}")
    print(f"grid: {grid_epochs} epochs, best {grid.best.metric:.4f} at τ={grid.best.values[KEY]}")
    print(f"asha: {asha_epochs} epochs, best {asha.best.metric:.4f} at τ={asha.best.values[KEY]}")
    print(
        f"ASHA/grid epochs: {share:.2f} (bar <= {MAX_EPOCH_SHARE:.2f}); best-metric gap: "
        f"{gap:.2f} points (bar <= {MAX_GAP_POINTS:.1f})"
    )
    passed = share <= MAX_EPOCH_SHARE and gap <= MAX_GAP_POINTS
    print("PASS" if passed else "FAIL")


if __name__ == "__main__":
    main()
