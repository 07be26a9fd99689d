"""Open-set retrieval on the 158 held-out glyphs characters: every metric-learning job
(`jobs/metric/*_glyphs.yaml`), the ProtoNet and SimCLR glyphs jobs, raw pixels and a random-init
conv4, each over several seeds, scored by MAP@R, R-Precision and Precision@1 (Musgrave et al.
2020) with a 95 % interval over the seeds (Student's t).

    .venv/bin/python benchmarks/retrieval_glyphs.py [--only triplet,supcon] [--seeds 0,1,2]
        [--readme README.md]

Each (job, seed) result is kept in benchmarks/retrieval_glyphs_results.json, so an interrupted
benchmark goes on where it stopped and --only re-measures some rows. With --readme the table
replaces the one between the retrieval-glyphs markers in that file.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from readme_tables import replace_table
from references import untrained_encoders
from rich.console import Console
from scipy import stats

from reprlab.config import JobConfig, load_job
from reprlab.data.catalog import ingest
from reprlab.eval.features import embedding_metrics, extract_features
from reprlab.methods import Method
from reprlab.train.prepare import prepare
from reprlab.train.run import run_prepared

JOBS = Path(__file__).resolve().parent.parent / "jobs"
RESULTS = Path(__file__).resolve().parent / "retrieval_glyphs_results.json"
SPLIT = "test"
KEYS = ("map_at_r", "r_precision", "precision_at_1")
SCORED = ["eval.retrieval_split=test", "eval.clustering=false"]
"""Overrides that make every job's final evaluation the retrieval of the test characters."""


def glyph_jobs() -> list[Path]:
    """Each metric-learning loss's glyphs job, then the ProtoNet and SimCLR references."""
    return [
        *sorted(JOBS.glob("metric/*_glyphs.yaml")),
        JOBS / "protonet_glyphs.yaml",
        JOBS / "simclr_glyphs.yaml",
    ]


def frozen_scores(method: Method, job: JobConfig) -> dict[str, float]:
    """Retrieval metrics of an untrained representation of the test characters."""
    dataset = prepare(job).dataset
    images, labels = dataset.read(SPLIT)
    features = extract_features(method, images, job.data.image_size)
    found = embedding_metrics(features, labels, retrieval=True, clustering=False, seed=job.seed)
    return {key: found[f"retrieval_{key}"] for key in KEYS}


def reference_scores(seed: int) -> dict[str, dict[str, float]]:
    """Raw pixels and a random-init conv4 of the metric jobs' width, seeded by `seed`."""
    job = load_job(JOBS / "metric/triplet_glyphs.yaml", [f"seed={seed}"])
    return {name: frozen_scores(method, job) for name, method in untrained_encoders(job, 1).items()}


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % interval (t distribution; 0 for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    spread = statistics.stdev(values) / len(values) ** 0.5
    return mean, float(stats.t.ppf(0.975, len(values) - 1)) * spread


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| representation | seeds | MAP@R | R-Precision | Precision@1 |",
        "|---|---|---|---|---|",
    ]
    for name, by_seed in results.items():
        cells = []
        for key in KEYS:
            values = [scores[key] for scores in by_seed.values()]
            mean, half = interval(values)
            spread = f" ± {100 * half:.1f}" if len(values) > 1 else ""  # no interval from one
            cells.append(f"{100 * mean:.1f}{spread} %")
        lines.append(f"| {name} | {len(by_seed)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated method names")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--readme", type=Path, help="README to update between the markers")
    args = parser.parse_args()
    console = Console()
    ingest("glyphs")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    wanted = set(filter(None, args.only.split(",")))
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for seed in seeds:
        for name, scores in reference_scores(seed).items():
            results.setdefault(name, {})[str(seed)] = scores
    for path in glyph_jobs():
        for seed in seeds:
            job = load_job(path, [f"seed={seed}", *SCORED])
            if wanted and job.method not in wanted:
                continue
            console.rule(f"{job.name} seed {seed}")
            metrics = run_prepared(prepare(job), console=console).metrics
            row = f"{job.method} (`jobs/{path.relative_to(JOBS)}`)"
            results.setdefault(row, {})[str(seed)] = {
                key: metrics[f"eval/retrieval_{key}"] for key in KEYS
            }
            RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True))
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True))
    markdown = table(results)
    print(markdown)
    if args.readme:
        replace_table(args.readme, "retrieval-glyphs", markdown)
        console.print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
