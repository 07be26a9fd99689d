"""Jobs and sweeps submitted to a Ray cluster through Ray's Jobs API: the project folder goes
with the submission (not its virtualenv, data or run state), the cluster runs the same
`reprlab run` / `reprlab tune` a user runs here, and its logs come back while it runs."""

from __future__ import annotations

import asyncio
import os
import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from mlflow.exceptions import MlflowException
from ray.exceptions import AuthenticationError
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

from reprlab.cluster.auth import find_token, looked_in
from reprlab.config import ConfigError, JobConfig
from reprlab.data.catalog import EMBEDDED
from reprlab.tracking.mlflow import ensure_experiment
from reprlab.tracking.ui import runs_view_url

UPLOAD_EXCLUDES = [
    ".venv",
    ".git",
    "**/__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "test-artifacts",
    "mlruns",
    "*.db",
]
"""What stays behind: the virtualenv, git history, caches, local MLflow stores and results."""
FORWARDED_VARIABLES = ("MLFLOW_TRACKING_URI",)
"""Where the job should record, when set here; credentials stay with the cluster's own env."""


@dataclass(frozen=True)
class SweepOptions:
    """The `reprlab tune` options a submitted sweep carries."""

    space: Path
    samples: int | None = None
    scheduler: str | None = None
    search: str | None = None

    def arguments(self, root: Path) -> list[str]:
        args = ["--space", project_relative(self.space, root, "--space")]
        for flag, value in (
            ("--samples", self.samples),
            ("--scheduler", self.scheduler),
            ("--search", self.search),
        ):
            if value is not None:
                args += [flag, str(value)]
        return args


@dataclass(frozen=True)
class Submission:
    """What is sent to the cluster: the command, the files and settings it runs with, and
    labels that `reprlab jobs list` shows."""

    entrypoint: str
    runtime_env: dict
    metadata: dict[str, str] = field(default_factory=dict)


def project_relative(path: Path, root: Path, key: str) -> str:
    """`path` relative to the project folder the cluster receives; ConfigError outside it."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ConfigError(
            f"{key}: {path} is outside the project folder {root} that is uploaded to the "
            "cluster; move it inside"
        ) from None


def build_submission(
    job: JobConfig,
    job_file: Path,
    overrides: list[str],
    root: Path,
    sweep: SweepOptions | None = None,
) -> Submission:
    """The submission of an already validated `job` (read from `job_file` with `overrides`):
    an embedded dataset is ingested on the cluster first (idempotent), then the job or sweep
    runs from the uploaded project, with reprlab's own package from it too."""
    command = ["run"] if sweep is None else ["tune"]
    command.append(project_relative(job_file, root, "JOB_FILE"))
    if sweep is not None:
        command += sweep.arguments(root)
    reprlab = ["python", "-m", "reprlab.cli"]
    steps = [shlex.join(reprlab + command + list(overrides))]
    if job.data.dataset in EMBEDDED:
        steps.insert(0, shlex.join(reprlab + ["ingest", job.data.dataset]))
    forwarded = {name: os.environ[name] for name in FORWARDED_VARIABLES if os.environ.get(name)}
    runtime_env = {
        "working_dir": str(root),
        "py_modules": [str(root / "platform" / "reprlab")],
        "excludes": UPLOAD_EXCLUDES,
        "env_vars": forwarded,
    }
    metadata = {"reprlab.job": job.name, "reprlab.command": command[0]}
    return Submission(" && ".join(steps), runtime_env, metadata)


def connect(address: str | None) -> JobSubmissionClient:
    """A Jobs API client of the cluster at `address` (default: $RAY_ADDRESS) with the token
    from Ray's standard places; ConfigError (one line) when the cluster is unreachable or
    refuses the token."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or not address.startswith(("http://", "https://")):
        raise ConfigError(
            f"--address: the cluster's dashboard URL, http://HEAD:8265 (or $RAY_ADDRESS), "
            f"got {address!r}"
        )
    token = find_token()
    try:
        return JobSubmissionClient(address, headers=token.header() if token else None)
    except AuthenticationError:
        if token is None:
            raise ConfigError(
                f"{address}: the cluster requires a Ray token and none was found "
                f"(looked in {looked_in()})"
            ) from None
        raise ConfigError(
            f"{address}: the cluster refused the Ray token from {token.source}; "
            "use the token the cluster was started with"
        ) from None
    except (requests.ConnectionError, ConnectionError) as error:
        reason = str(error).splitlines()[0][:160]
        raise ConfigError(f"{address}: cannot reach the cluster's dashboard ({reason})") from None


def experiment_link(experiment: str) -> str:
    """Where to browse the job's runs: the experiment's runs view on the MLflow server that
    $MLFLOW_TRACKING_URI names (the experiment is created now, so the link works at once), or
    a note that the cluster records to its own store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return "the cluster's own tracking store (set MLFLOW_TRACKING_URI=http://... for a link)"
    try:
        experiment_id = ensure_experiment(experiment, uri)
    except MlflowException as error:
        reason = str(error).splitlines()[0][:160]
        raise ConfigError(f"MLFLOW_TRACKING_URI: {uri} refused the request ({reason})") from None
    return runs_view_url(uri, experiment_id)


def submit(client: JobSubmissionClient, submission: Submission) -> str:
    """Submit; the submission id."""
    return client.submit_job(
        entrypoint=submission.entrypoint,
        runtime_env=submission.runtime_env,
        metadata=submission.metadata,
    )


def follow(client: JobSubmissionClient, submission_id: str, write: Callable[[str], None]) -> str:
    """Stream the job's log to `write` until it ends; its final status (SUCCEEDED, FAILED,
    STOPPED). Interrupting the follower (Ctrl-C) leaves the job running on the cluster.

    The log's websocket is read on a daemon thread with its own event loop, and this thread
    only waits for it: Ctrl-C then ends the follower at once, instead of waiting for an
    interrupted asyncio run to close its websocket (it once held the follower past 60 s)."""
    failures: list[BaseException] = []
    interrupted = threading.Event()

    async def stream() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            if interrupted.is_set():  # nothing more on stdout while the follower exits
                return
            write(chunk)

    def tail() -> None:
        try:
            asyncio.run(stream())
        except Exception as error:  # re-raised on the calling thread
            failures.append(error)

    reader = threading.Thread(target=tail, name="reprlab-job-log", daemon=True)
    reader.start()
    try:
        while reader.is_alive():
            reader.join(timeout=0.5)
    except KeyboardInterrupt:
        interrupted.set()
        raise
    if failures:
        raise failures[0]
    return str(client.get_job_status(submission_id).value)


def exit_code(status: str) -> int:
    """The command's exit status for a finished job's status: 0 only when it succeeded."""
    return 0 if status == JobStatus.SUCCEEDED.value else 1


def job_rows(jobs: list[JobDetails]) -> list[tuple[str, str, str, str]]:
    """(submission id, status, reprlab job, command) of submitted jobs, newest first."""
    submitted = [job for job in jobs if job.submission_id]
    submitted.sort(key=lambda job: job.start_time or 0, reverse=True)
    return [
        (
            job.submission_id,
            str(job.status.value),
            (job.metadata or {}).get("reprlab.job", "-"),
            job.entrypoint.rsplit(" && ", 1)[-1],
        )
        for job in submitted
    ]
