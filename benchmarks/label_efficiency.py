"""Label efficiency on mnist5k: held-out accuracy of supervised-only, a fine-tuned SimCLR encoder
(a quickstart run), FixMatch and the other semi-supervised methods trained on the same seeded,
stratified label subsets (labels per class 1, 4, 10, 25 and all), each cell a whole platform run
(Ray Data, Ray Train on 2 workers, MLflow) of the method's `jobs/semi/` job.

    .venv/bin/python benchmarks/label_efficiency.py [--labels 1,4,10,25,all]
        [--methods supervised,finetune,fixmatch] [--encoder RUN] [--epochs fixmatch=30]
        [--readme README.md]

Cells are kept in benchmarks/label_efficiency_results.json (a rerun re-measures the cells it
is asked for and keeps the others). Prints the Markdown table (accuracy, and points over
supervised-only on the same labels), writes benchmarks/label_efficiency.png (accuracy against
labels per class, one line per method), logs both to an MLflow run `label_efficiency` in the
`benchmarks` experiment, and with --readme replaces the table between the label-efficiency
markers, so the README's numbers come from this command.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mlflow
from readme_tables import replace_table
from rich.console import Console

from reprlab.config import load_job
from reprlab.data.catalog import ingest
from reprlab.data.handle import DatasetHandle
from reprlab.tracking.figures import accuracy_against_labels_figure
from reprlab.tracking.mlflow import tracking_uri
from reprlab.train.prepare import prepare
from reprlab.train.run import run_prepared

ROOT = Path(__file__).resolve().parent.parent
SEMI = ROOT / "jobs" / "semi"
RESULTS = Path(__file__).resolve().parent / "label_efficiency_results.json"
FIGURE = Path(__file__).resolve().parent / "label_efficiency.png"
METHOD_JOBS = {
    "supervised": SEMI / "supervised_4labels_mnist5k.yaml",
    "finetune": SEMI / "finetune_mnist5k.yaml",
    "pseudo_label": SEMI / "pseudo_label_mnist5k.yaml",
    "mean_teacher": SEMI / "mean_teacher_mnist5k.yaml",
    "mixmatch": SEMI / "mixmatch_mnist5k.yaml",
    "fixmatch": SEMI / "fixmatch_mnist5k.yaml",
}
ALL = "all"
SCORE = "eval/classifier_acc"


def label_counts(text: str) -> list[str]:
    """`1,4,all` -> ["1", "4", "all"]; SystemExit naming the flag otherwise."""
    counts = [part.strip() for part in text.split(",") if part.strip()]
    if not counts or not all(c == ALL or (c.isdigit() and int(c) > 0) for c in counts):
        raise SystemExit(f"--labels: positive integers or 'all', comma-separated; got {text!r}")
    return counts


def quickstart_encoder(console: Console) -> str:
    """Train the quickstart SimCLR job and return its run name (the encoder to fine-tune)."""
    console.rule("pretraining the encoder: jobs/quickstart.yaml")
    prepared = prepare(load_job(ROOT / "jobs" / "quickstart.yaml"))
    return run_prepared(prepared, console=console).record.run_name


def epochs_by_method(text: str) -> dict[str, int]:
    """`fixmatch=30,mixmatch=5` -> {"fixmatch": 30, "mixmatch": 5}; SystemExit otherwise."""
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if not all(len(p) == 2 and p[0] in METHOD_JOBS and p[1].isdigit() for p in pairs):
        raise SystemExit(f"--epochs: METHOD=EPOCHS, comma-separated; got {text!r}")
    return {method: int(epochs) for method, epochs in pairs}


def run_cell(method: str, labels: str, encoder: str, epochs: int | None, console: Console) -> dict:
    """Train `method`'s job on `labels` per class (every label for 'all'), for `epochs` (None:
    the job's); its held-out accuracy, minutes end to end, run name and epochs."""
    epochs = epochs or load_job(METHOD_JOBS[method]).optim.epochs
    overrides = [
        f"name={method}_{labels}labels_mnist5k",
        f"data.labels_per_class={'null' if labels == ALL else labels}",
        f"optim.epochs={epochs}",
    ]
    if method == "finetune":
        overrides.append(f"model.init_from={encoder}")
    prepared = prepare(load_job(METHOD_JOBS[method], overrides))
    console.rule(f"{method}, {labels} labels per class, {epochs} epochs")
    started = time.perf_counter()
    summary = run_prepared(prepared, console=console)
    return {
        "accuracy": summary.metrics[SCORE],
        "minutes": (time.perf_counter() - started) / 60,
        "run": summary.record.run_name,
        "epochs": epochs,
    }


def table(cells: dict[str, dict], methods: list[str], counts: list[str]) -> str:
    """Methods by labels per class: accuracy, and points over supervised-only on the same
    labels where both were measured."""
    lines = [
        "| method | " + " | ".join(f"{c} labels/class" for c in counts) + " | minutes, all |",
        "|---|" + "---|" * (len(counts) + 1),
    ]
    for method in methods:
        row, minutes = [], 0.0
        for count in counts:
            cell = cells.get(f"{method}/{count}")
            if cell is None:
                row.append("–")
                continue
            minutes += cell["minutes"]
            text = f"{cell['accuracy']:.1%}"
            baseline = cells.get(f"supervised/{count}")
            if method != "supervised" and baseline is not None:
                text += f" ({100 * (cell['accuracy'] - baseline['accuracy']):+.1f})"
            row.append(text)
        epochs = sorted({c["epochs"] for k, c in cells.items() if k.startswith(f"{method}/")})
        label = f"{method} ({'/'.join(map(str, epochs))} epochs)"
        lines.append(f"| {label} | " + " | ".join(row) + f" | {minutes:.0f} |")
    return "\n".join(lines).replace("%", " %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="1,4,10,25,all", help="labels per class, or all")
    parser.add_argument("--methods", default=",".join(METHOD_JOBS), help="comma-separated")
    parser.add_argument("--encoder", help="run to fine-tune (default: train the quickstart)")
    parser.add_argument("--epochs", default="", help="METHOD=EPOCHS instead of the job's")
    parser.add_argument("--readme", type=Path, help="README to update between the markers")
    args = parser.parse_args()
    counts = label_counts(args.labels)
    epochs = epochs_by_method(args.epochs)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHOD_JOBS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; allowed: {', '.join(METHOD_JOBS)}")
    console = Console()
    ingest("mnist5k")
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"cells": {}}
    encoder = args.encoder
    if "finetune" in methods and encoder is None:
        encoder = quickstart_encoder(console)
    for method in methods:
        for count in counts:
            stored["cells"][f"{method}/{count}"] = run_cell(
                method, count, encoder, epochs.get(method), console
            )
            stored["encoder"] = encoder or stored.get("encoder")
            RESULTS.write_text(json.dumps(stored, indent=1, sort_keys=True))
    all_counts = sorted({key.split("/")[1] for key in stored["cells"]}, key=_order)
    shown = [m for m in METHOD_JOBS if any(k.startswith(f"{m}/") for k in stored["cells"])]
    markdown = table(stored["cells"], shown, all_counts)
    dataset = DatasetHandle.open("mnist5k")
    per_class = dataset.rows("train") // dataset.num_classes  # where 'all' sits on the axis
    curves = {
        method: {
            per_class if count == ALL else int(count): stored["cells"][f"{method}/{count}"][
                "accuracy"
            ]
            for count in all_counts
            if f"{method}/{count}" in stored["cells"]
        }
        for method in shown
    }
    figure = accuracy_against_labels_figure(curves, per_class)
    figure.savefig(FIGURE, dpi=120)
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment("benchmarks")
    with mlflow.start_run(run_name="label_efficiency"):
        mlflow.log_text(markdown, "label_efficiency.md")
        mlflow.log_figure(figure, "label_efficiency.png")
        mlflow.log_dict(stored, "label_efficiency_results.json")
    print(markdown)
    if args.readme:
        replace_table(args.readme, "label-efficiency", markdown)
        console.print(f"updated {args.readme}")


def _order(count: str) -> float:
    return float("inf") if count == ALL else int(count)


if __name__ == "__main__":
    main()
