"""The `reprlab` command: every user path starts here."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="reprlab: visual representation learning on Ray, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def ingest(
    name: Annotated[str, typer.Argument(help="embedded set to ingest: mnist5k or digits")],
    out: Annotated[
        Path | None, typer.Option(help="root folder for datasets [default: $REPRLAB_HOME/datasets]")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the stratified train/test split")] = 0,
    test_fraction: Annotated[float, typer.Option(help="share of rows held out as 'test'")] = 0.2,
    force: Annotated[bool, typer.Option(help="rewrite even if an identical copy exists")] = False,
) -> None:
    """Write a dataset as Parquet shards plus manifest.json (idempotent, atomic)."""
    from reprlab.data.catalog import ingest as ingest_dataset
    from reprlab.data.shards import load_manifest

    try:
        path = ingest_dataset(name, out, seed=seed, test_fraction=test_fraction, force=force)
    except ValueError as error:
        _fail(str(error))
    manifest = load_manifest(path)
    counts = ", ".join(f"{split} {info['count']}" for split, info in manifest["splits"].items())
    console.print(f"ingested [bold]{name}[/bold] -> {path} ({counts})", highlight=False)


@app.command()
def datasets(
    root: Annotated[
        Path | None, typer.Option(help="datasets root [default: $REPRLAB_HOME/datasets]")
    ] = None,
) -> None:
    """List embedded and ingested datasets."""
    from reprlab.data.catalog import list_datasets

    table = Table(title="datasets")
    for column in ("name", "embedded", "ingested", "train", "test", "shape", "classes", "path"):
        table.add_column(column)
    for row in list_datasets(root):
        shape = "x".join(map(str, row["image_shape"])) if row.get("image_shape") else "-"
        table.add_row(
            row["name"],
            "yes" if row["embedded"] else "",
            "yes" if row["ingested"] else ("[red]broken[/red]" if row.get("error") else "no"),
            str(row.get("train") or "-"),
            str(row.get("test") or "-"),
            shape,
            str(row.get("classes") or "-"),
            row.get("error") or row.get("path") or "",
        )
    console.print(table)


@app.command(context_settings={"allow_extra_args": False})
def run(
    job_file: Annotated[Path, typer.Argument(help="job YAML, e.g. jobs/quickstart.yaml")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="dotted key=value overrides, e.g. optim.epochs=3")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="continue the named run from its latest checkpoint")
    ] = None,
) -> None:
    """Train a job on Ray, evaluate its encoder, log everything to MLflow."""
    from reprlab.config import ConfigError, load_job
    from reprlab.train.trainer import job_dataset, resumable_run, run_job

    try:
        job = load_job(job_file, overrides or [])
        job_dataset(job)
        if resume:
            resumable_run(resume)
    except ConfigError as error:
        _fail(str(error))
    summary = run_job(job, resume=resume)
    table = Table(title=f"evaluation: {summary.run_name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.metrics.items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)
    console.print(f"MLflow run {summary.run_id} in {summary.tracking_uri}", highlight=False)
    console.print(
        f"browse it: reprlab ui   (or: mlflow ui --backend-store-uri "
        f"{shlex.quote(summary.tracking_uri)} --host 127.0.0.1)",
        highlight=False,
        soft_wrap=True,
    )


@app.command("augment-preview")
def augment_preview(
    job_file: Annotated[Path, typer.Argument(help="job YAML, e.g. jobs/quickstart.yaml")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="dotted key=value overrides, e.g. data.augment.policy=byol"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="PNG to write [default: ./<job name>-augment.png]")
    ] = None,
    pairs: Annotated[int, typer.Option(min=1, help="images (rows) to show")] = 8,
    seed: Annotated[int, typer.Option(help="seed of the views")] = 0,
) -> None:
    """Write a PNG grid of the job's augmentation: original, view 1, view 2 per row."""
    from reprlab.config import ConfigError, load_job
    from reprlab.data.pipeline import build_policy
    from reprlab.tracking.figures import policy_figure
    from reprlab.train.trainer import job_dataset

    try:
        job = load_job(job_file, overrides or [])
        dataset_dir, _ = job_dataset(job)
    except ConfigError as error:
        _fail(str(error))
    policy = build_policy(job.data.augment.model_dump(), job.data.image_size)
    figure = policy_figure(dataset_dir, job.data.train_split, policy, pairs, seed)
    path = out or Path(f"{job.name}-augment.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    console.print(str(path), highlight=False, soft_wrap=True)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
    tracking_uri: Annotated[
        str | None, typer.Option(help="store to browse [default: the runs' tracking URI]")
    ] = None,
) -> None:
    """Open MLflow's UI on 127.0.0.1 over the configured tracking store."""
    from reprlab.tracking.mlflow import tracking_uri as default_uri

    uri = default_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        console.print(f"runs are on an MLflow server: open {uri}", highlight=False)
        return
    console.print(f"MLflow UI for {uri} at http://127.0.0.1:{port}", highlight=False)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    raise typer.Exit(subprocess.call(command, env=os.environ.copy()))


if __name__ == "__main__":
    app()
