"""What a new user sees in MLflow 3's UI at the address `reprlab ui` prints: the runs table in
model-training mode, a run with its dataset, and a sweep's parent run that expands to its
trials. A real `mlflow server` on 127.0.0.1, filled through reprlab's own record phase,
browsed in headless Chromium (Debian's, never a downloaded one)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import Page, expect, sync_playwright

from reprlab.config import load_job
from reprlab.data.catalog import ingest
from reprlab.runs import RunRecord
from reprlab.tracking.mlflow import end_run
from reprlab.tracking.ui import runs_view_url
from reprlab.train.prepare import open_dataset, prepare
from reprlab.train.run import open_record
from reprlab.tune.run import open_sweep
from reprlab.tune.spaces import trial_job
from reprlab.tune.sweep import SweepSettings, plan_sweep
from reprlab.tune.trial import trial_run_name

from .servers import HOST, answers, free_port, server_environ, started_process

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "jobs" / "quickstart.yaml"
SPACE = ROOT / "tune_spaces" / "simclr_temperature.yaml"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EXPERIMENT = "browser"
UI_TIMEOUT_MS = 60_000
"""How long the UI may take to show something (2 shared cores, a cold server)."""
DATASET_CELL = '[data-testid="open-dataset-drawer"]'
RUN_NAME_CELL = '[role="gridcell"][col-id*="Run Name"]'


def artifacts_dir() -> Path:
    """Where tests leave files for a person to look at: $REPRLAB_TEST_ARTIFACTS, else
    test-artifacts/ in the repository root."""
    folder = Path(os.environ.get("REPRLAB_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 over a SQLite store in `folder`, without auth, as a
    single user's; yields its URL and on exit stops its whole process tree (checked gone)."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{folder}/mlflow.db"]
    command += ["--artifacts-destination", str(folder / "artifacts")]
    with started_process(
        command,
        env=server_environ({}),
        log_path=folder / "server.log",
        ready=lambda: answers(f"{url}/health"),
        timeout=120,
    ):
        yield url


@dataclass(frozen=True)
class Recorded:
    """What the server holds: one run, a sweep's parent run and the runs of its two trials."""

    run: RunRecord
    digest: str
    sweep_name: str
    parent_run_id: str
    trials: list[RunRecord]


def record_runs(url: str) -> Recorded:
    """Fill the server as `reprlab run` and `reprlab tune` would record (without training):
    a run of the quickstart job on digits, and a two-trial sweep whose trial runs carry the
    tags a Tune trial gives them. Every run ends FINISHED."""
    ingest("digits")
    overrides = ["data.dataset=digits", "data.image_size=8"]
    overrides += [f"tracking.experiment={EXPERIMENT}", f"tracking.tracking_uri={url}"]
    prepared = prepare(load_job(str(QUICKSTART), overrides))
    run = open_record(prepared)
    settings = SweepSettings(str(QUICKSTART), str(SPACE), tuple(overrides), samples=2)
    plan = plan_sweep(settings)
    sweep = open_sweep(plan, open_dataset(plan.job))
    trials = []
    for number, temperature in enumerate((0.1, 0.3)):
        trial_id = f"trial_{number:05d}"
        job = trial_job(plan.job, {"method_args.temperature": temperature})
        tags = {
            "mlflow.parentRunId": sweep.parent_run_id,
            "reprlab.sweep": plan.name,
            "reprlab.trial_id": trial_id,
        }
        trials.append(open_record(prepare(job, run_name=trial_run_name(plan.name, trial_id)), tags))
    for record in (run, *trials):
        end_run(record.mlflow_run_id, url, failed=False)
    end_run(sweep.parent_run_id, url, failed=False)
    return Recorded(run, prepared.dataset.digest, plan.name, sweep.parent_run_id, trials)


def row(page: Page, run_id: str):
    """The runs table's row of a run (the grid draws it in pinned and scrolling parts)."""
    return page.locator(f'[role="row"][row-id="{run_id}"]')


def check_runs_table(page: Page, recorded: Recorded) -> None:
    """The run, its dataset (and the dataset's split sizes), the sweep's parent row and, once
    it is expanded, a trial with its dataset."""
    run = row(page, recorded.run.mlflow_run_id)
    expect(run.get_by_role("link", name=recorded.run.run_name, exact=True)).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    dataset = f"digits ({recorded.digest})"
    expect(run.locator(DATASET_CELL)).to_have_text(dataset)
    expect(run.get_by_text(re.compile("^training$", re.IGNORECASE))).to_be_visible()  # context
    expect(page.get_by_text("4 matching runs")).to_be_visible()
    run.locator(DATASET_CELL).click()
    drawer = page.get_by_role("dialog")
    expect(drawer).to_contain_text('split sizes: {"train":1437,"test":360}')
    page.keyboard.press("Escape")
    expect(drawer).to_have_count(0)

    parent = row(page, recorded.parent_run_id)
    expect(parent.get_by_role("link", name=recorded.sweep_name, exact=True)).to_be_visible()
    trial = recorded.trials[0]
    expect(page.get_by_role("link", name=trial.run_name, exact=True)).to_have_count(0)
    parent.locator(RUN_NAME_CELL).get_by_role("button").click()
    expect(page.get_by_role("link", name=trial.run_name, exact=True)).to_be_visible()
    expect(row(page, trial.mlflow_run_id).locator(DATASET_CELL)).to_have_text(dataset)
    expect(page).to_have_url(re.compile(r"/runs\?workflowType=machine_learning"))


def test_the_runs_table_shows_runs_datasets_and_a_sweeps_trials(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser test drives Debian's chromium, which .ci/run "
            "installs (apt-get install -y chromium); install it the same way"
        )
    with mlflow_server(tmp_path) as url:
        recorded = record_runs(url)
        experiment_id = MlflowClient(url).get_experiment_by_name(EXPERIMENT).experiment_id
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 900})
                page.goto(runs_view_url(url, experiment_id))
                try:
                    check_runs_table(page, recorded)
                finally:
                    page.screenshot(path=artifacts_dir() / "mlflow-runs-table.png")
            finally:
                browser.close()
