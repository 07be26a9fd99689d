"""The cluster suite's test servers do what the suite relies on: MLflow's basic auth refuses
strangers, a run logged through the server lands (metrics in its store, artifact bytes in the
S3 bucket), pyarrow reaches the bucket with only the endpoint's env (Ray Train's s3:// path),
and no server listens beyond 127.0.0.1."""

from __future__ import annotations

import io
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from mlflow.tracking import MlflowClient
from PIL import Image

from .servers import HOST, MlflowServer, S3Endpoint, listening_sockets

pytestmark = pytest.mark.cluster

SEARCH_EXPERIMENTS = "/api/2.0/mlflow/experiments/search"


def search_experiments(server: MlflowServer, auth: tuple[str, str] | None) -> int:
    """The HTTP status of one REST call (search experiments) made with `auth`."""
    reply = requests.get(
        server.url + SEARCH_EXPERIMENTS, params={"max_results": 1}, auth=auth, timeout=10
    )
    return reply.status_code


def png_bytes() -> bytes:
    """A small PNG image, the kind of figure a run logs."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def bucket_objects(s3: S3Endpoint, prefix: str) -> dict[str, bytes]:
    """Key -> bytes of every object in the endpoint's bucket under `prefix`."""
    client = s3.client()
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=s3.bucket, Key=item["Key"])["Body"].read()
        for item in listed
    }


def test_basic_auth_refuses_strangers_and_accepts_the_admin(mlflow_server: MlflowServer):
    """No credentials, a wrong password or an unknown user get 401; the admin gets in."""
    user, password = mlflow_server.username, mlflow_server.password
    assert user and password
    assert search_experiments(mlflow_server, None) == 401
    assert search_experiments(mlflow_server, (user, secrets.token_urlsafe(16))) == 401
    assert search_experiments(mlflow_server, ("intruder", password)) == 401
    assert search_experiments(mlflow_server, (user, password)) == 200


def test_run_lands_in_store_and_artifact_in_bucket(
    mlflow_server: MlflowServer,
    s3: S3Endpoint,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    """A run logged with the server's env: its metric reads back through the server and its
    PNG's bytes sit in the bucket under mlflow/, so the server proxies artifacts to S3."""
    for name, value in mlflow_server.env.items():
        monkeypatch.setenv(name, value)
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment_id = client.create_experiment("servers-check")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "loss", 0.25, step=3)
    figure = tmp_path / "grid.png"
    figure.write_bytes(png_bytes())
    client.log_artifact(run_id, str(figure), artifact_path="figures")
    client.set_terminated(run_id)

    history = client.get_metric_history(run_id, "loss")
    assert [(m.value, m.step) for m in history] == [(0.25, 3)]
    assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    stored = bucket_objects(s3, "mlflow/")
    keys = [key for key in stored if key.endswith(f"{run_id}/artifacts/figures/grid.png")]
    assert len(keys) == 1, sorted(stored)
    assert stored[keys[0]] == figure.read_bytes()


def test_servers_listen_on_loopback_only(s3: S3Endpoint, mlflow_server: MlflowServer):
    """Both servers' process trees listen on their own ports, and only on 127.0.0.1."""
    sockets = listening_sockets([s3.pid, mlflow_server.pid])
    assert {ip for _, ip, _ in sockets} == {HOST}, sockets
    ports = {port for _, _, port in sockets}
    assert {urlsplit(s3.url).port, urlsplit(mlflow_server.url).port} <= ports, sockets


def test_listening_sockets_reports_a_wildcard_bind():
    """The loopback check can fail: a socket bound to 0.0.0.0 is reported as such."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as wildcard:
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        port = wildcard.getsockname()[1]
        assert (os.getpid(), "0.0.0.0", port) in listening_sockets([os.getpid()])


PYARROW_ROUNDTRIP = """
import sys
import pyarrow.fs as pafs

fs, path = pafs.FileSystem.from_uri(sys.argv[1])
with fs.open_output_stream(path) as out:
    out.write(b"checkpoint bytes")
with fs.open_input_stream(path) as stream:
    assert stream.read() == b"checkpoint bytes"
"""


def test_pyarrow_s3_roundtrip_with_only_the_endpoint_env(s3: S3Endpoint, tmp_path: Path):
    """A fresh process whose environment is PATH plus `s3.env` (HOME empty: no ~/.aws) writes and
    reads s3://BUCKET/... through pyarrow, as Ray Train does for an s3:// storage_path."""
    uri = f"s3://{s3.bucket}/pyarrow-check/ckpt.bin"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **s3.env}
    done = subprocess.run(
        [sys.executable, "-c", PYARROW_ROUNDTRIP, uri],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert bucket_objects(s3, "pyarrow-check/") == {"pyarrow-check/ckpt.bin": b"checkpoint bytes"}
