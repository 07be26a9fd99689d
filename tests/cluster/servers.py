"""Real test servers on 127.0.0.1 for the cluster suite: an S3 endpoint (moto) and an MLflow
tracking server with basic auth that proxies artifacts to it. Each helper starts a subprocess
in its own session at a free port, waits until it answers, yields a frozen dataclass, and on
exit ends every process of that session, checking with psutil that none survives."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psutil
import requests

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 40
REGION = "us-east-1"
BUCKET = "reprlab"
INHERITED_PREFIXES_DROPPED = ("AWS_", "MLFLOW_")
"""Ambient AWS and MLflow settings a developer may have exported; no server inherits them."""


@dataclass(frozen=True)
class S3Endpoint:
    """An S3-compatible endpoint with one bucket, and the environment a client process needs.

    `env` holds AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_REGION,
    AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3 and MLFLOW_S3_ENDPOINT_URL. With it applied, boto3,
    MLflow's S3 artifact repository and pyarrow's `FileSystem.from_uri("s3://BUCKET/...")` (what
    Ray Train uses for an s3:// storage_path) reach the endpoint as they are: pyarrow reads
    AWS_ENDPOINT_URL(_S3) and takes plain http from its scheme, so no `endpoint_override=` or
    `scheme=` query is needed. `pid` is the server's root process.
    """

    url: str
    bucket: str
    env: Mapping[str, str]
    pid: int

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint, built from `env` alone."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.env["AWS_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )


@dataclass(frozen=True)
class MlflowServer:
    """An MLflow tracking server; `env` holds MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD (the last two only with basic auth), what a client process needs;
    `pid` is the server's root process, `log_path` its log."""

    url: str
    username: str | None
    password: str | None
    env: Mapping[str, str]
    pid: int
    log_path: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def server_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without ambient AWS_*/MLFLOW_* settings, plus `extra`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_PREFIXES_DROPPED)}
    return {**base, **extra}


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a server's log, for an error message."""
    if not path.exists():
        return "(no log written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def answers(url: str) -> bool:
    """Whether an HTTP GET on `url` gets a 2xx reply (False while nothing listens yet)."""
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def is_alive(process: psutil.Process) -> bool:
    """Whether a process still runs (a zombie waiting for its parent to reap it does not)."""
    with suppress(psutil.Error):
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    return False


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants; empty when it is gone."""
    with suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def session_processes(session_id: int) -> list[psutil.Process]:
    """Every live process in a session: a server, its workers and anything they spawned, even
    processes re-parented to init after their parent exited."""
    found = []
    for process in psutil.process_iter():
        with suppress(psutil.Error, OSError):
            if os.getsid(process.pid) == session_id and is_alive(process):
                found.append(process)
    return found


def signal_all(processes: Iterable[psutil.Process], kill: bool) -> None:
    """SIGTERM (or SIGKILL with `kill`) to each process that is still there."""
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            if kill:
                process.kill()
            else:
                process.terminate()


def stop_process_tree(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """End a process started with `start_new_session=True`, its descendants and everything
    else in its session (terminate, wait, kill), and raise if any of them is still alive."""
    members = {p.pid: p for p in [*process_tree(proc.pid), *session_processes(proc.pid)]}
    signal_all(members.values(), kill=False)
    _, alive = psutil.wait_procs(list(members.values()), timeout=timeout)
    signal_all(alive, kill=True)
    psutil.wait_procs(alive, timeout=timeout)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    survivors = {p.pid for p in members.values() if is_alive(p)}
    survivors |= {p.pid for p in session_processes(proc.pid)}
    if survivors:
        raise RuntimeError(f"processes of {proc.args[:4]} outlived their stop: {sorted(survivors)}")


@contextmanager
def started_process(
    cmd: list[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    ready: Callable[[], bool],
    timeout: float = START_TIMEOUT_S,
) -> Iterator[subprocess.Popen]:
    """Run `cmd` in its own session with its output in `log_path`, yield it once `ready()` is
    true, and stop its whole process tree on exit; a process that dies or never gets ready
    fails with its log tail."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_until_ready(proc, ready, log_path, timeout)
        yield proc
    finally:
        stop_process_tree(proc)


def wait_until_ready(
    proc: subprocess.Popen, ready: Callable[[], bool], log_path: Path, timeout: float
) -> None:
    """Poll `ready()` until it holds; raise with the log tail if the process exits or time runs
    out first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args[:4]} exited with {proc.returncode} before answering; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{proc.args[:4]} did not answer within {timeout:.0f}s; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(0.2)


def s3_client_env(url: str) -> dict[str, str]:
    """Fresh random test credentials and the endpoint settings that point clients at `url`."""
    return {
        "AWS_ACCESS_KEY_ID": f"test-{secrets.token_hex(8)}",
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(24),
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": url,
        "AWS_ENDPOINT_URL_S3": url,
        "MLFLOW_S3_ENDPOINT_URL": url,
    }


@contextmanager
def s3_server(tmp_path: Path, bucket: str = BUCKET) -> Iterator[S3Endpoint]:
    """A moto S3 server on 127.0.0.1 at a free port, holding one empty `bucket`."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    cmd = [sys.executable, "-m", "moto.server", "--host", HOST, "--port", str(port)]
    with started_process(
        cmd,
        env=server_environ({}),
        log_path=tmp_path / "moto.log",
        ready=lambda: answers(f"{url}/moto-api/"),
    ) as proc:
        endpoint = S3Endpoint(url=url, bucket=bucket, env=s3_client_env(url), pid=proc.pid)
        endpoint.client().create_bucket(Bucket=bucket)
        yield endpoint


def write_auth_config(tmp_path: Path) -> Path:
    """A basic-auth config like infra/mlflow/basic_auth.ini (READ by default, users in SQLite),
    with no password in it: the admin's comes from MLFLOW_AUTH_ADMIN_PASSWORD, as in compose."""
    config = tmp_path / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return config


def mlflow_command(tmp_path: Path, port: int, s3: S3Endpoint, auth: bool) -> list[str]:
    """`mlflow server` on 127.0.0.1 with a SQLite store, artifacts proxied to `s3`, one worker."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        f"s3://{s3.bucket}/mlflow",
    ]
    return [*cmd, "--app-name", "basic-auth"] if auth else cmd


@contextmanager
def mlflow_server(tmp_path: Path, s3: S3Endpoint, auth: bool = True) -> Iterator[MlflowServer]:
    """An MLflow tracking server on 127.0.0.1 at a free port: SQLite backend store, artifacts
    proxied to `s3` under s3://BUCKET/mlflow, and with `auth` basic auth as in production (a
    random admin password and Flask secret key generated per start). One uvicorn worker and no
    job runner (huey): the suite runs no MLflow jobs and shares 2 cores."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    username, password = ("admin", secrets.token_urlsafe(24)) if auth else (None, None)
    extra = {**s3.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    client_env = {"MLFLOW_TRACKING_URI": url}
    if username and password:
        extra |= {
            "MLFLOW_AUTH_CONFIG_PATH": str(write_auth_config(tmp_path)),
            "MLFLOW_AUTH_ADMIN_USERNAME": username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        }
        client_env |= {"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}
    log_path = tmp_path / "mlflow.log"
    with started_process(
        mlflow_command(tmp_path, port, s3, auth),
        env=server_environ(extra),
        log_path=log_path,
        ready=lambda: answers(f"{url}/health"),
    ) as proc:
        yield MlflowServer(url, username, password, client_env, proc.pid, log_path)


def listening_sockets(pids: Iterable[int]) -> list[tuple[int, str, int]]:
    """(pid, ip, port) of every listening TCP socket (IPv4 or IPv6) of these processes and their
    descendants: the check that a server binds 127.0.0.1 and never 0.0.0.0 or ::."""
    found = set()
    for process in (member for pid in pids for member in process_tree(pid)):
        with suppress(psutil.NoSuchProcess):
            for conn in process.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((process.pid, conn.laddr.ip, conn.laddr.port))
    return sorted(found)
