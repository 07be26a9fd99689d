"""The method-zoo table: every `jobs/*_mnist5k.yaml` (and the quickstart SimCLR job) run end to
end through the platform, one after another on one Ray instance, next to a random-init encoder
of the same architecture evaluated with the same probes on the same split.

    .venv/bin/python benchmarks/zoo.py [--only simclr,byol] [--readme README.md]

Each job's row is stored in benchmarks/zoo_results.json (--only re-measures some rows and keeps
the others). Prints the Markdown table (probe, kNN, points over random init, minutes end to
end); with --readme it replaces the table between the zoo markers in that file, so the
README's numbers come from this command (`make zoo`), never typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch
from rich.console import Console

from reprlab.config import JobConfig, load_job
from reprlab.data.catalog import ingest
from reprlab.eval.features import evaluate_encoder
from reprlab.train.build import make_method
from reprlab.train.prepare import PreparedRun, prepare
from reprlab.train.run import run_prepared

START, END = "<!-- zoo:start -->", "<!-- zoo:end -->"
JOBS = Path(__file__).resolve().parent.parent / "jobs"
RESULTS = Path(__file__).resolve().parent / "zoo_results.json"


def zoo_jobs() -> list[Path]:
    """The quickstart SimCLR job, then every method's mnist5k job in name order."""
    return [JOBS / "quickstart.yaml", *sorted(JOBS.glob("*_mnist5k.yaml"))]


def random_init_scores(prepared: PreparedRun) -> dict[str, float]:
    """Probe and kNN of the job's encoder before any training (seeded like the job)."""
    job, dataset = prepared.job, prepared.dataset
    torch.manual_seed(job.seed)
    return evaluate_encoder(make_method(job, dataset.in_chans), dataset, job)


def architecture(job: JobConfig) -> str:
    """A short name of the encoder, the key of the random-init baseline."""
    width = f" w{job.model.width}" if job.model.width else ""
    return f"{job.model.backbone}{width}"


def table(rows: list[dict]) -> str:
    lines = [
        "| method | job | linear probe | kNN (k=20) | probe vs random init | minutes |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | `jobs/{row['job']}` | {row['probe']:.1%} | {row['knn']:.1%} "
            f"| {row['gain']:+.1f} points ({row['arch']} {row['baseline']:.1%}) "
            f"| {row['minutes']:.1f} |"
        )
    return "\n".join(lines).replace("%", " %")


def write_readme(readme: Path, markdown: str) -> None:
    text = readme.read_text()
    block = f"{START}\n{markdown}\n{END}"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: no {START} ... {END} markers to replace")
    readme.write_text(pattern.sub(lambda _: block, text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated method names")
    parser.add_argument("--readme", type=Path, help="README to update between the zoo markers")
    args = parser.parse_args()
    console = Console()
    ingest("mnist5k")
    wanted = set(filter(None, args.only.split(",")))
    jobs = [load_job(path) for path in zoo_jobs()]
    jobs = [job for job in jobs if not wanted or job.method in wanted]
    baselines: dict[str, float] = {}
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for index, job in enumerate(jobs, 1):
        arch = architecture(job)
        prepared = prepare(job)
        if arch not in baselines:
            baselines[arch] = random_init_scores(prepared)["eval/linear_probe_acc"]
        console.rule(f"[{index}/{len(jobs)}] {job.name} ({job.method})")
        started = time.perf_counter()
        summary = run_prepared(prepared, console=console)
        minutes = (time.perf_counter() - started) / 60
        probe = summary.metrics["eval/linear_probe_acc"]
        rows[job.name] = {
            "method": job.method,
            "job": f"{job.name}.yaml",
            "probe": probe,
            "knn": summary.metrics["eval/knn_acc"],
            "gain": 100 * (probe - baselines[arch]),
            "arch": arch,
            "baseline": baselines[arch],
            "minutes": minutes,
        }
        RESULTS.write_text(json.dumps(rows, indent=1, sort_keys=True))
        console.print(table(list(rows.values())))
    markdown = table([rows[name] for name in sorted(rows)])
    print(markdown)
    if args.readme:
        write_readme(args.readme, markdown)
        console.print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
