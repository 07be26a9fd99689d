"""MLflow's UI over a tracking store: the address of an experiment's runs, the experiment to
show by default, and a local `mlflow ui` that never outlives the command that started it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from reprlab.signals import sigterm_as_interrupt
from reprlab.tracking.mlflow import ensure_experiment

DEFAULT_EXPERIMENT = "quickstart"
"""The experiment shown before reprlab has written any run (the quickstart job's)."""
REPRLAB_RUN = "tags.`reprlab.job` IS NOT NULL"
"""Search filter of the runs (and sweeps) reprlab opened."""


def runs_view_url(base_url: str, experiment_id: str) -> str:
    """The address of an experiment's runs table in the UI at `base_url`, in model-training
    mode (MLflow 3 otherwise opens an experiment on its GenAI overview of traces)."""
    root = base_url.rstrip("/")
    return f"{root}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def last_active_experiment(uri: str) -> str | None:
    """The id of the experiment of reprlab's newest run in the store, or None when it has none."""
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not ids:
        return None
    runs = client.search_runs(
        ids, REPRLAB_RUN, max_results=1, order_by=["attributes.start_time DESC"]
    )
    return runs[0].info.experiment_id if runs else None


def ui_experiment_id(uri: str, name: str | None = None) -> str:
    """The id of experiment `name`; by default the one reprlab wrote to last, else the
    quickstart's (created as its first run would). ValueError (one line) when `name` does not
    exist or the store cannot be read."""
    try:
        if name is None:
            return last_active_experiment(uri) or ensure_experiment(DEFAULT_EXPERIMENT, uri)
        experiment = MlflowClient(uri).get_experiment_by_name(name)
    except MlflowException as error:
        raise ValueError(f"{uri}: {' '.join(str(error.message).split())}") from None
    if experiment is None:
        raise ValueError(f"--experiment: no experiment named {name!r} in {uri}")
    return experiment.experiment_id


def wait_until_up(base_url: str, server: subprocess.Popen) -> bool:
    """Poll the UI's /health until it answers, however long the server takes to start (on a
    busy machine, over a minute); False when the server exits first."""
    while server.poll() is None:
        try:
            with urllib.request.urlopen(f"{base_url.rstrip('/')}/health", timeout=2) as reply:
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False


def _group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop `process` and every process in its group: SIGTERM, then SIGKILL to whatever is
    still there after `grace_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace_s)
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def local_ui(uri: str, port: int) -> Iterator[subprocess.Popen]:
    """`mlflow ui` over `uri` on 127.0.0.1:`port` for the block, in a process group of its own
    that is stopped whole when the block exits (Ctrl-C and SIGTERM included)."""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with sigterm_as_interrupt():
        server = subprocess.Popen(command, env=os.environ.copy(), start_new_session=True)
        try:
            yield server
        finally:
            stop_process_group(server)
