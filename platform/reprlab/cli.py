"""The `reprlab` command: every user path starts here."""

from __future__ import annotations

import shlex
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

    from reprlab.cluster.submit import SweepOptions
    from reprlab.data.handle import DatasetHandle
    from reprlab.runs import RunRecord

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
    name: Annotated[
        str,
        typer.Argument(
            help="embedded: mnist5k, digits, glyphs; downloaded: omniglot, cifar_fs, cifar10; "
            "or imagefolder (with --path)"
        ),
    ],
    out: Annotated[
        str | None,
        typer.Option(
            help="root for datasets: a folder, or s3://BUCKET/PREFIX that every node of a "
            "cluster reads [default: $REPRLAB_HOME/datasets]"
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="seed of the split (rows, or imagefolder classes) and row order")
    ] = 0,
    test_fraction: Annotated[
        float | None,
        typer.Option(help="share of rows held out as 'test' (mnist5k, digits) [default: 0.2]"),
    ] = None,
    path: Annotated[
        Path | None,
        typer.Option(help="imagefolder: a folder of class folders, or of train/ val/ test/"),
    ] = None,
    image_size: Annotated[
        int, typer.Option(min=1, help="imagefolder: side of the square images")
    ] = 84,
    save_as: Annotated[
        str | None, typer.Option(help="imagefolder: dataset name [default: the folder's name]")
    ] = None,
    force: Annotated[bool, typer.Option(help="rewrite even if an identical copy exists")] = False,
) -> None:
    """Write a dataset as Parquet shards plus manifest.json (idempotent, atomic)."""
    from reprlab.data.catalog import EMBEDDED
    from reprlab.data.catalog import ingest as ingest_dataset
    from reprlab.data.manifest import load_manifest
    from reprlab.data.remote import upload_dataset
    from reprlab.data.torchvision_sets import DOWNLOADABLE, ingest_download, ingest_imagefolder
    from reprlab.storage import is_remote

    if name not in {*EMBEDDED, *DOWNLOADABLE, "imagefolder"}:
        _fail(
            f"unknown dataset '{name}'; embedded: {', '.join(sorted(EMBEDDED))}; "
            f"downloaded: {', '.join(DOWNLOADABLE)}; or imagefolder --path DIR"
        )
    if (path is None) == (name == "imagefolder"):
        _fail("--path DIR goes with imagefolder, and imagefolder needs it")
    if test_fraction is not None and name not in EMBEDDED:
        _fail(
            f"--test-fraction applies to {', '.join(sorted(EMBEDDED))}; '{name}' keeps its own "
            "splits"
        )
    remote = out is not None and is_remote(out)
    root = Path(tempfile.mkdtemp(prefix="reprlab-ingest-")) if remote else out and Path(out)
    try:
        if path is not None:
            target = ingest_imagefolder(
                path, save_as or path.resolve().name, root, image_size=image_size, seed=seed
            )
        elif name in DOWNLOADABLE:
            target = ingest_download(name, root, seed=seed, force=force)
        else:
            target = ingest_dataset(name, root, seed=seed, test_fraction=test_fraction, force=force)
        splits = load_manifest(target)["splits"]
        if remote:
            target = upload_dataset(target, f"{out.rstrip('/')}/{target.name}")
    except (ValueError, OSError) as error:
        _fail(str(error).splitlines()[0])
    finally:
        if remote:
            shutil.rmtree(root, ignore_errors=True)
    rows = ", ".join(f"{split} {info['count']}" for split, info in splits.items())
    classes = ", ".join(
        f"{split} {sum(n > 0 for n in info['per_class'].values())}"
        for split, info in splits.items()
    )
    console.print(
        f"ingested [bold]{name}[/bold] -> {target} (rows: {rows}; classes: {classes})",
        highlight=False,
    )


@app.command()
def datasets(
    root: Annotated[
        Path | None, typer.Option(help="datasets root [default: $REPRLAB_HOME/datasets]")
    ] = None,
) -> None:
    """List embedded and ingested datasets."""
    from reprlab.data.catalog import list_datasets

    table = Table(title="datasets")
    columns = ("name", "embedded", "ingested", "train", "val", "test", "shape", "classes", "path")
    for column in columns:
        table.add_column(column)
    for row in list_datasets(root):
        shape = "x".join(map(str, row["image_shape"])) if row.get("image_shape") else "-"
        table.add_row(
            row["name"],
            "yes" if row["embedded"] else "",
            "yes" if row["ingested"] else ("[red]broken[/red]" if row.get("error") else "no"),
            str(row.get("train") or "-"),
            str(row.get("val") or "-"),
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
    verbose: Annotated[
        bool, typer.Option(help="show Ray's own output too (otherwise in the run's ray.log)")
    ] = False,
) -> None:
    """Train a job on Ray, evaluate its encoder, log everything to MLflow."""
    from reprlab.config import ConfigError, load_job
    from reprlab.methods.collapse import RepresentationCollapse
    from reprlab.signals import sigterm_as_interrupt
    from reprlab.train.prepare import prepare
    from reprlab.train.run import run_prepared

    try:
        prepared = prepare(load_job(job_file, overrides or []), resume=resume)
        with sigterm_as_interrupt():  # `reprlab jobs stop`: the run ends FAILED, with why
            summary = run_prepared(prepared, console=console, verbose=verbose)
    except (ConfigError, RepresentationCollapse) as error:
        _fail(str(error))
    record = summary.record
    table = Table(title=f"evaluation: {record.run_name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.metrics.items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)
    console.print(f"MLflow run {record.mlflow_run_id} in {record.tracking_uri}", highlight=False)
    console.print(f"Ray's output: {record.log_file}", highlight=False)
    console.print(
        f"browse it: reprlab ui   (or: mlflow ui --backend-store-uri "
        f"{shlex.quote(record.tracking_uri)} --host 127.0.0.1)",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def pipeline(
    pipeline_file: Annotated[
        Path,
        typer.Argument(help="pipeline YAML, e.g. jobs/semi/noisy_student_pipeline_mnist5k.yaml"),
    ],
    resume: Annotated[
        str | None,
        typer.Option(help="continue the named pipeline run: finished stages are not rerun"),
    ] = None,
    verbose: Annotated[
        bool, typer.Option(help="show Ray's own output too (otherwise in each run's ray.log)")
    ] = False,
) -> None:
    """Run a pipeline's stages in order, each a job that may start from an earlier stage's run,
    as one MLflow parent run with a child run per stage."""
    from reprlab.config import ConfigError
    from reprlab.pipeline.runner import run_pipeline
    from reprlab.pipeline.spec import load_pipeline
    from reprlab.signals import sigterm_as_interrupt

    try:
        checked = load_pipeline(pipeline_file)
        with sigterm_as_interrupt():
            record = run_pipeline(checked, resume=resume, console=console, verbose=verbose)
    except ConfigError as error:
        _fail(str(error))
    table = Table(title=f"pipeline: {record.name}")
    for column in ("stage", "run", "evaluation"):
        table.add_column(column)
    for key in record.keys:
        metrics = record.finished.get(key, {})
        shown = "  ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        table.add_row(key, record.runs.get(key, "-"), shown)
    console.print(table)
    console.print(
        f"MLflow parent run {record.parent_run_id} in {record.tracking_uri}", highlight=False
    )


def _shot_list(text: str) -> list[int]:
    try:
        shots = [int(part) for part in text.split(",")]
    except ValueError:
        shots = []
    if not shots or min(shots) < 1:
        _fail(f"--shots: expected comma-separated positive integers such as 1,5, got {text!r}")
    return shots


PROTOCOLS = ("fewshot", "retrieval", "clustering", "finetune")


@app.command("eval")
def evaluate(
    source: Annotated[
        str, typer.Argument(help="checkpoint folder, run folder, run name or MLflow run id")
    ],
    protocol: Annotated[
        str,
        typer.Option(
            help="fewshot (frozen encoder, episodes), retrieval or clustering (frozen encoder, "
            "one split), finetune (whole runs)"
        ),
    ] = "fewshot",
    dataset: Annotated[
        str | None,
        typer.Option(
            help="ingested dataset (name or folder) to score on [default: glyphs for fewshot, "
            "the run's own otherwise]"
        ),
    ] = None,
    split: Annotated[
        str, typer.Option(help="split whose classes form the episodes or are retrieved/clustered")
    ] = "test",
    ways: Annotated[int, typer.Option(min=2, help="classes per episode")] = 5,
    shots: Annotated[str, typer.Option(help="support images per class, e.g. 1,5")] = "1,5",
    queries: Annotated[int, typer.Option(min=1, help="query images per class")] = 15,
    episodes: Annotated[int, typer.Option(min=2, help="fixed episodes per shot setting")] = 600,
    seed: Annotated[int, typer.Option(help="seed of the fixed episodes or label subsets")] = 0,
    labels_per_class: Annotated[
        str, typer.Option(help="finetune: labels per class of each run, e.g. 1,10,all")
    ] = "1,10,all",
    freeze: Annotated[
        str, typer.Option(help="finetune: none | all (linear evaluation) | stages:K")
    ] = "none",
    epochs: Annotated[int, typer.Option(min=1, help="finetune: epochs of each run")] = 5,
    lr: Annotated[float, typer.Option(min=0, help="finetune: SGD learning rate")] = 0.01,
) -> None:
    """Score a trained encoder and log the result to the run it came from: frozen, on N-way
    K-shot episodes (fewshot: nearest prototype and a linear head on the support set), by
    open-set retrieval or k-means clustering of one split (retrieval, clustering), or
    fine-tuned with K labels per class (finetune: one whole run per K, children of that run)."""
    from reprlab.data.episodes import EpisodeSpec, episodes_problem
    from reprlab.data.handle import DatasetHandle
    from reprlab.eval.few_shot import fewshot_of_encoder
    from reprlab.runs import find_trained
    from reprlab.tracking.mlflow import log_evaluation
    from reprlab.train.build import load_trained_method

    if protocol not in PROTOCOLS:
        _fail(f"--protocol: allowed: {', '.join(PROTOCOLS)}, got {protocol!r}")
    shot_list = _shot_list(shots)
    try:
        run, checkpoint = find_trained(source)
        if protocol == "finetune":
            scored = DatasetHandle.open(dataset or run.job.data.dataset)
            _finetune(run, checkpoint, scored, labels_per_class, freeze, epochs, lr, seed)
            return
        scored = DatasetHandle.open(
            dataset or ("glyphs" if protocol == "fewshot" else run.job.data.dataset)
        )
    except ValueError as error:
        _fail(str(error))
    if split not in scored.splits:
        _fail(
            f"--split: '{split}' is not a split of {scored.name}; allowed: "
            f"{', '.join(scored.splits)}"
        )
    if protocol in ("retrieval", "clustering"):
        _embedding_protocol(run, checkpoint, scored, split, protocol, seed)
        return
    for k in shot_list:
        problem = episodes_problem(scored.manifest, split, EpisodeSpec(ways, k, queries))
        if problem:
            _fail(f"--ways/--shots/--queries: {scored.name} {problem}")
    name = scored.name  # a dataset given by path is named by its folder, as when ingested
    settings = {
        "dataset": name,
        "split": split,
        "ways": ways,
        "shots": shot_list,
        "queries": queries,
        "episodes": episodes,
        "seed": seed,
        "checkpoint": str(checkpoint),
    }
    images, labels = scored.read(split)
    try:
        results = fewshot_of_encoder(
            load_trained_method(run, checkpoint),
            images,
            labels,
            in_chans=run.in_chans,
            image_size=run.job.data.image_size,
            ways=ways,
            shots=shot_list,
            queries=queries,
            episodes=episodes,
            seed=seed,
        )
    except ValueError as error:
        _fail(str(error))
    metrics = {f"fewshot/{name}/{split}_{key}": value for key, value in results.items()}
    log_evaluation(
        run.mlflow_run_id,
        run.tracking_uri,
        metrics,
        settings,
        f"eval/fewshot_{name}_{split}_{ways}way.json",
    )
    table = Table(title=f"{ways}-way few-shot on {name}/{split}, {episodes} episodes")
    for column in ("shots", "classifier", "accuracy", "95% CI"):
        table.add_column(column, justify="right")
    for k in shot_list:
        for classifier in ("proto", "linear"):
            key = f"{ways}way_{k}shot_{classifier}"
            table.add_row(
                str(k),
                classifier,
                f"{100 * results[key + '_acc']:.2f} %",
                f"± {100 * results[key + '_ci95']:.2f}",
            )
    console.print(table)
    console.print(f"logged to MLflow run {run.mlflow_run_id}", highlight=False)


def _embedding_protocol(
    run: RunRecord, checkpoint: Path, scored: DatasetHandle, split: str, protocol: str, seed: int
) -> None:
    """`reprlab eval --protocol retrieval|clustering`: the frozen features of one split (and
    their projection, `projection_*`), their metrics logged to the run and printed as a table."""
    from reprlab.eval.features import embedding_metrics, embedding_spaces
    from reprlab.eval.few_shot import match_channels
    from reprlab.tracking.mlflow import log_evaluation
    from reprlab.train.build import load_trained_method

    images, labels = scored.read(split)
    try:
        spaces = embedding_spaces(
            load_trained_method(run, checkpoint),
            match_channels(images, run.in_chans),
            run.job.data.image_size,
        )
    except ValueError as error:
        _fail(str(error))
    results = {}
    for prefix, features in spaces.items():
        found = embedding_metrics(
            features,
            labels,
            retrieval=protocol == "retrieval",
            clustering=protocol == "clustering",
            seed=seed,
        )
        results |= {
            f"{prefix}{key.removeprefix(f'{protocol}_')}": value for key, value in found.items()
        }
    name = scored.name
    metrics = {f"{protocol}/{name}/{split}_{key}": value for key, value in results.items()}
    settings = {"dataset": name, "split": split, "seed": seed, "checkpoint": str(checkpoint)}
    log_evaluation(
        run.mlflow_run_id,
        run.tracking_uri,
        metrics,
        settings,
        f"eval/{protocol}_{name}_{split}.json",
    )
    classes = len(set(labels.tolist()))
    table = Table(title=f"{protocol} on {name}/{split}: {len(labels)} images of {classes} classes")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.items():
        table.add_row(key, f"{100 * value:.2f} %")
    console.print(table)
    console.print(f"logged to MLflow run {run.mlflow_run_id}", highlight=False)


def _finetune(
    run: RunRecord,
    checkpoint: Path,
    scored: DatasetHandle,
    labels_per_class: str,
    freeze: str,
    epochs: int,
    lr: float,
    seed: int,
) -> None:
    """`reprlab eval --protocol finetune`: the runs, then their accuracies as a table."""
    from reprlab.signals import sigterm_as_interrupt
    from reprlab.train.transfer import (
        FinetuneSettings,
        finetune_protocol,
        parse_labels_per_class,
    )

    counts = parse_labels_per_class(labels_per_class)
    settings = FinetuneSettings(counts, freeze=freeze, epochs=epochs, lr=lr, seed=seed)
    with sigterm_as_interrupt():
        metrics = finetune_protocol(run, checkpoint, scored, settings, console)
    table = Table(title=f"{run.run_name} fine-tuned on {scored.name} ({freeze} frozen)")
    table.add_column("labels per class", justify="right")
    table.add_column("held-out accuracy", justify="right")
    for count in counts:
        table.add_row(count, f"{100 * metrics[f'finetune/{scored.name}/{count}_acc']:.2f} %")
    console.print(table)
    console.print(f"logged to MLflow run {run.mlflow_run_id}", highlight=False)


@app.command()
def tune(
    job_file: Annotated[
        Path | None, typer.Argument(help="job YAML, e.g. jobs/quickstart.yaml")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="dotted key=value overrides, e.g. optim.epochs=10")
    ] = None,
    space: Annotated[
        Path | None, typer.Option(help="search space YAML, e.g. tune_spaces/mae_mask_ratio.yaml")
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(min=1, help="trials sampled [default: 8; a grid once, N repeats it N times]"),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="fifo | asha | pbt [default: the space's, else asha]")
    ] = None,
    search: Annotated[str, typer.Option(help="random | grid | optuna")] = "random",
    max_concurrent: Annotated[
        int | None, typer.Option(min=1, help="trials at once [default: as many as fit]")
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="per-epoch metric [default: the space's, else the job's]")
    ] = None,
    mode: Annotated[str | None, typer.Option(help="max | min")] = None,
    register: Annotated[
        str | None, typer.Option(help="register the best encoder under this model name (@best)")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="continue the named sweep; finished trials are kept")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="print the resolved space and trial count; start nothing")
    ] = False,
    verbose: Annotated[
        bool, typer.Option(help="show Ray's own output too (otherwise in the sweep's ray.log)")
    ] = False,
) -> None:
    """Search a job's hyperparameters with Ray Tune: one whole run per trial, one MLflow parent
    run per sweep with a child per trial."""
    from reprlab.config import ConfigError
    from reprlab.signals import sigterm_as_interrupt
    from reprlab.tune.run import SweepInterrupted, run_sweep
    from reprlab.tune.sweep import SweepRecord, SweepSettings, plan_sweep

    try:
        if resume:
            resumed = SweepRecord.load(resume)
            plan = plan_sweep(resumed.settings, name=resumed.name)
        else:
            if job_file is None or space is None:
                _fail("give a job file and --space SPACE.yaml (or --resume NAME)")
            resumed = None
            settings = SweepSettings(
                job_file=str(job_file),
                space_file=str(space),
                overrides=tuple(overrides or ()),
                scheduler=scheduler,
                search=search,
                samples=samples,
                max_concurrent=max_concurrent,
                metric=metric,
                mode=mode,
                register=register,
            )
            plan = plan_sweep(settings)
    except ConfigError as error:
        _fail(str(error))
    table = Table(title=f"space {plan.space.name}: {plan.trials} trials, {plan.scheduler}")
    table.add_column("key")
    table.add_column("domain")
    for domain in plan.space.domains:
        table.add_row(domain.key, domain.describe())
    console.print(table)
    console.print(
        f"metric {plan.metric} ({plan.mode}), {plan.job.optim.epochs} epochs per trial, "
        f"search {plan.settings.search}",
        highlight=False,
    )
    if dry_run:
        return
    try:
        with sigterm_as_interrupt():
            summary = run_sweep(plan, console=console, verbose=verbose, resumed=resumed)
    except ConfigError as error:
        _fail(str(error))
    except SweepInterrupted as interrupted:
        console.print(str(interrupted), highlight=False)
        raise typer.Exit(code=130) from None
    record = summary.record
    if summary.best is None:
        _fail(f"sweep {record.name}: no trial reported {plan.metric}; see its ray.log")
    best = summary.best
    values = ", ".join(f"{key}={value}" for key, value in best.values.items())
    console.print(f"best trial {best.trial_id}: {values}  {plan.metric} {best.metric:.4f}")
    console.print(
        f"MLflow parent run {record.parent_run_id} in {record.tracking_uri}", highlight=False
    )
    if "registered" in summary.tags:
        console.print(f"registered the best encoder as {summary.tags['registered']}")
    console.print(f"reproduce it: {summary.command}", highlight=False, soft_wrap=True)


@app.command()
def sweeps() -> None:
    """List past sweeps: name, job, space, trials done/total, best metric, when."""
    import time

    from reprlab.tune.sweep import list_sweeps

    records = list_sweeps()
    table = Table(title="sweeps")
    longest = max((len(record.name) for record in records), default=4)
    table.add_column("name", no_wrap=True, min_width=longest)  # whole: --resume takes it
    for column in ("job", "space", "trials", "best", "started"):
        table.add_column(column)
    for record in records:
        best = record.best
        shown = f"{best['metric']:.4f}" if best else "-"
        table.add_row(
            record.name,
            record.job,
            record.space,
            f"{record.finished}/{record.trials}",
            shown,
            time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created)),
        )
    console.print(table)


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
    """Write a PNG of what the job trains on: for views, original, view 1, view 2 per row; for
    episodes, the first training episode."""
    from reprlab.config import ConfigError, load_job
    from reprlab.train.prepare import prepare
    from reprlab.train.sources import batch_source

    try:
        prepared = prepare(load_job(job_file, overrides or []))
    except ConfigError as error:
        _fail(str(error))
    job = prepared.job
    figure = batch_source(job, prepared.dataset).preview_figure(pairs, seed)  # pairs >= 1
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
    experiment: Annotated[
        str | None,
        typer.Option(
            help="experiment to show [default: the one reprlab wrote to last, else quickstart]"
        ),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="also open it in the browser once the UI answers")
    ] = False,
) -> None:
    """Open MLflow's UI (on 127.0.0.1) on an experiment's runs; prints their address."""
    import webbrowser

    from reprlab.tracking.mlflow import tracking_uri as default_uri
    from reprlab.tracking.ui import local_ui, runs_view_url, ui_experiment_id, wait_until_up

    uri = default_uri(tracking_uri)
    try:
        experiment_id = ui_experiment_id(uri, experiment)
    except ValueError as error:
        _fail(str(error))
    if uri.startswith(("http://", "https://")):
        url = runs_view_url(uri, experiment_id)
        console.print(f"runs are on an MLflow server: {url}", highlight=False, soft_wrap=True)
        if open_browser:
            webbrowser.open(url)
        return
    base = f"http://127.0.0.1:{port}"
    url = runs_view_url(base, experiment_id)
    console.print(f"MLflow UI for {uri}: {url}", highlight=False, soft_wrap=True)
    try:
        with local_ui(uri, port) as server:
            if open_browser:
                if wait_until_up(base, server):
                    webbrowser.open(url)
                else:
                    console.print("[red]error:[/red] MLflow UI did not start", highlight=False)
            code = server.wait()
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


ADDRESS_HELP = "the cluster's dashboard, http://HEAD:8265 [default: $RAY_ADDRESS]"
jobs_app = typer.Typer(help="Jobs submitted to a Ray cluster.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


@app.command(context_settings={"allow_extra_args": False})
def submit(
    job_file: Annotated[Path, typer.Argument(help="job YAML inside this project")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="dotted key=value overrides, e.g. optim.epochs=3")
    ] = None,
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
    follow: Annotated[
        bool, typer.Option(help="stream the job's logs until it ends; exit with its status")
    ] = False,
    tune: Annotated[
        bool, typer.Option(help="submit a sweep (reprlab tune) instead of a run")
    ] = False,
    space: Annotated[Path | None, typer.Option(help="--tune: search space YAML")] = None,
    samples: Annotated[int | None, typer.Option(min=1, help="--tune: trials sampled")] = None,
    scheduler: Annotated[str | None, typer.Option(help="--tune: fifo | asha | pbt")] = None,
    search: Annotated[str | None, typer.Option(help="--tune: random | grid | optuna")] = None,
) -> None:
    """Validate a job (or a sweep) here, then run it on a Ray cluster through the Jobs API."""
    from reprlab.cluster.submit import SweepOptions, build_submission, connect, experiment_link
    from reprlab.cluster.submit import submit as submit_job
    from reprlab.config import ConfigError, load_job

    root = Path.cwd()
    try:
        job = load_job(job_file, overrides or [])
        sweep = None
        if tune or space is not None:
            if space is None:
                _fail("--tune needs --space SPACE.yaml")
            sweep = SweepOptions(space, samples, scheduler, search)
            _check_sweep(job_file, overrides or [], sweep)
        submission = build_submission(job, job_file, overrides or [], root, sweep)
        client = connect(address)
        link = experiment_link(job.tracking.experiment)
        submission_id = submit_job(client, submission)
    except ConfigError as error:
        _fail(str(error))
    try:  # from here on a Ctrl-C leaves the submitted job running
        console.print(f"submitted [bold]{submission_id}[/bold] to {client.get_address()}")
        console.print(f"MLflow: {link}", highlight=False)
        if follow:
            _follow(client, submission_id, address)
    except KeyboardInterrupt:
        _stopped_following(submission_id, address)
    console.print(f"follow it: reprlab jobs logs {submission_id} --follow", highlight=False)


def _check_sweep(job_file: Path, overrides: list[str], sweep: SweepOptions) -> None:
    """A sweep's plan, resolved here as `reprlab tune --dry-run` would: a space that does not
    fit the job fails before anything reaches the cluster."""
    from reprlab.tune.sweep import SweepSettings, plan_sweep

    settings = SweepSettings(
        job_file=str(job_file),
        space_file=str(sweep.space),
        overrides=tuple(overrides),
        scheduler=sweep.scheduler,
        search=sweep.search or "random",
        samples=sweep.samples,
    )
    plan_sweep(settings)


def _follow(client: JobSubmissionClient, submission_id: str, address: str | None) -> None:
    """Stream a job's logs; exit with its status. Ctrl-C stops following, not the job."""
    from reprlab.cluster.submit import exit_code, follow

    try:
        status = follow(client, submission_id, lambda text: print(text, end="", flush=True))
    except KeyboardInterrupt:
        _stopped_following(submission_id, address)
    console.print(f"{submission_id}: {status}", highlight=False)
    raise typer.Exit(exit_code(status))


def _stopped_following(submission_id: str, address: str | None) -> NoReturn:
    hint = f" --address {address}" if address else ""
    console.print(
        f"\nstopped following; {submission_id} keeps running on the cluster: "
        f"reprlab jobs logs {submission_id} --follow{hint}",
        highlight=False,
    )
    raise typer.Exit(130) from None


def _client(address: str | None) -> JobSubmissionClient:
    from reprlab.cluster.submit import connect
    from reprlab.config import ConfigError

    try:
        return connect(address)
    except ConfigError as error:
        _fail(str(error))


@jobs_app.command("list")
def jobs_list(address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None) -> None:
    """Submitted jobs, newest first."""
    from reprlab.cluster.submit import job_rows

    table = Table(title="jobs")
    for column in ("submission id", "status", "job", "command"):
        table.add_column(column)
    for row in job_rows(_client(address).list_jobs()):
        table.add_row(*row)
    console.print(table)


@jobs_app.command("status")
def jobs_status(
    submission_id: Annotated[str, typer.Argument(help="the id `reprlab submit` printed")],
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
) -> None:
    """A job's status and, when it ended badly, why."""
    info = _client(address).get_job_info(submission_id)
    console.print(f"{submission_id}: {info.status.value}", highlight=False)
    if info.message:
        console.print(info.message, highlight=False)


@jobs_app.command("logs")
def jobs_logs(
    submission_id: Annotated[str, typer.Argument(help="the id `reprlab submit` printed")],
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
    follow: Annotated[bool, typer.Option(help="keep streaming until the job ends")] = False,
) -> None:
    """A job's logs so far, or (--follow) as they come, exiting with the job's status."""
    client = _client(address)
    if follow:
        _follow(client, submission_id, address)
    print(client.get_job_logs(submission_id), end="")


@jobs_app.command("stop")
def jobs_stop(
    submission_id: Annotated[str, typer.Argument(help="the id `reprlab submit` printed")],
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
) -> None:
    """Ask the cluster to stop a job (its MLflow run ends FAILED, its checkpoints stay)."""
    stopped = _client(address).stop_job(submission_id)
    console.print(f"{submission_id}: {'stopping' if stopped else 'already ended'}", highlight=False)


if __name__ == "__main__":
    app()
