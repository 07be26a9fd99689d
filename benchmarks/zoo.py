"""The method-zoo table: every mnist5k job (`jobs/*_mnist5k.yaml`, `jobs/metric/`,
`jobs/classical/`, and the quickstart SimCLR job) run end to end through the platform, one after
another on one Ray instance, below raw pixels and a random-init conv4 scored the same way: linear
probe, kNN, retrieval (Precision@1, MAP@R) and k-means clustering (accuracy, NMI) of the frozen
features, and k-means accuracy in the loss's projection space where the method has one, on the
same held-out split.

    .venv/bin/python benchmarks/zoo.py [--only simclr,byol,dino_mnist5k] [--readme README.md]

Each job's row is stored in benchmarks/zoo_results.json (--only re-measures some rows, by method
or job name, and keeps the others; rows measured before a column existed show "–" there). Prints the
Markdown table; with --readme it replaces the table between the zoo markers in that file, so
the README's numbers come from this command (`make zoo`), never typed by hand.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from readme_tables import replace_table
from references import untrained_encoders
from rich.console import Console

from reprlab.config import load_job
from reprlab.data.catalog import ingest
from reprlab.eval.features import evaluate_encoder
from reprlab.train.prepare import PreparedRun, prepare
from reprlab.train.run import run_prepared

JOBS = Path(__file__).resolve().parent.parent / "jobs"
RESULTS = Path(__file__).resolve().parent / "zoo_results.json"


FAMILIES = {
    "classical": ("pca", "kmeans", "autoencoder"),
    "pretext": ("rotation", "jigsaw", "mae"),
    "metric": ("contrastive", "triplet", "multi_similarity", "supcon", "arcface", "proxy_anchor"),
    "supervised": ("supervised",),
}
"""The rung of the ladder each method stands on; every other method is joint-embedding SSL."""
COLUMNS = {
    "probe": "eval/linear_probe_acc",
    "knn": "eval/knn_acc",
    "p_at_1": "eval/retrieval_precision_at_1",
    "map_at_r": "eval/retrieval_map_at_r",
    "cluster_acc": "eval/clustering_acc",
    "nmi": "eval/clustering_nmi",
    "projection_cluster_acc": "eval/projection_clustering_acc",
}


def zoo_jobs() -> list[Path]:
    """The quickstart SimCLR job, then every mnist5k job in name order."""
    found = [*JOBS.glob("*_mnist5k.yaml"), *JOBS.glob("metric/*_mnist5k.yaml")]
    found += JOBS.glob("classical/*_mnist5k.yaml")
    return [JOBS / "quickstart.yaml", *sorted(found, key=lambda path: path.name)]


def family(method: str) -> str:
    return next((name for name, members in FAMILIES.items() if method in members), "SSL")


def scores(metrics: dict[str, float]) -> dict[str, float]:
    """The table's columns out of a run's evaluation metrics."""
    return {column: metrics[key] for column, key in COLUMNS.items() if key in metrics}


def reference_rows(prepared: PreparedRun) -> dict[str, dict]:
    """Raw pixels and the quickstart's conv4 before any training (seeded like the job), scored
    by the same evaluation as the runs."""
    job, dataset = prepared.job, prepared.dataset
    rows = {}
    for name, method in untrained_encoders(job, dataset.in_chans).items():
        rows[name] = {"family": "reference", "method": name, "job": None, "minutes": None}
        rows[name] |= scores(evaluate_encoder(method, dataset, job))
    return rows


def _cell(row: dict, column: str) -> str:
    return f"{row[column]:.1%}" if column in row else "–"


def table(rows: list[dict]) -> str:
    lines = [
        "| family | method | job | linear probe | kNN (k=20) | P@1 | MAP@R | k-means acc | NMI "
        "| k-means acc, projection | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        job = f"`jobs/{row['job']}`" if row["job"] else "–"
        minutes = f"{row['minutes']:.1f}" if row["minutes"] is not None else "–"
        cells = " | ".join(_cell(row, column) for column in COLUMNS)
        lines.append(
            f"| {row.get('family', family(row['method']))} | {row['method']} | {job} | {cells} "
            f"| {minutes} |"
        )
    return "\n".join(lines).replace("%", " %")


def ordered(rows: dict[str, dict]) -> list[dict]:
    """References first, then the ladder's rungs in order, runs by name within each."""
    rungs = ["reference", "classical", "pretext", "metric", "SSL", "supervised"]
    return sorted(
        rows.values(),
        key=lambda row: (rungs.index(row.get("family", family(row["method"]))), row["method"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated method or job names")
    parser.add_argument("--readme", type=Path, help="README to update between the zoo markers")
    args = parser.parse_args()
    console = Console()
    ingest("mnist5k")
    wanted = set(filter(None, args.only.split(",")))
    job_paths = {load_job(path).name: path for path in zoo_jobs()}
    jobs = [load_job(path) for path in job_paths.values()]
    jobs = [job for job in jobs if not wanted or {job.method, job.name} & wanted]
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    rows |= reference_rows(prepare(load_job(JOBS / "quickstart.yaml")))
    for index, job in enumerate(jobs, 1):
        prepared = prepare(job)
        console.rule(f"[{index}/{len(jobs)}] {job.name} ({job.method})")
        started = time.perf_counter()
        summary = run_prepared(prepared, console=console)
        rows[job.name] = {
            "family": family(job.method),
            "method": job.method,
            "job": str(Path(job_paths[job.name]).relative_to(JOBS)),
            "minutes": (time.perf_counter() - started) / 60,
            **scores(summary.metrics),
        }
        RESULTS.write_text(json.dumps(rows, indent=1, sort_keys=True))
        console.print(table(ordered(rows)))
    markdown = table(ordered(rows))
    print(markdown)
    if args.readme:
        replace_table(args.readme, "zoo", markdown)
        console.print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
