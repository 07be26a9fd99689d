"""Real servers for the cluster suite on 127.0.0.1, started once for tests/cluster and stopped
(every process checked gone) after its last test, before the integration tests start: an S3
endpoint, an MLflow server on it, and a two-node Ray cluster recording there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import servers
from .ray_cluster import RayCluster, ray_cluster

# --- object store and tracking server ---------------------------------------------------------


@pytest.fixture(scope="package")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.S3Endpoint]:
    """A moto S3 endpoint with the `reprlab` bucket; its `env` points clients at it."""
    with servers.s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
        yield endpoint


@pytest.fixture(scope="package")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, s3: servers.S3Endpoint
) -> Iterator[servers.MlflowServer]:
    """An MLflow server with basic auth whose artifacts go to `s3` under s3://reprlab/mlflow."""
    with servers.mlflow_server(tmp_path_factory.mktemp("mlflow"), s3) as server:
        yield server


# --- Ray cluster ------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    s3: servers.S3Endpoint,
    mlflow_server: servers.MlflowServer,
) -> Iterator[RayCluster]:
    """A head and one worker node of 3 CPUs each (one 2-CPU trainer and a Ray Data task fit on
    a node, two trainers do not) with token auth, whose jobs record to `mlflow_server` and
    reach `s3`; reprlab's state on the nodes lives in a fresh REPRLAB_HOME."""
    tmp = tmp_path_factory.mktemp("cluster")
    env = {**s3.env, **mlflow_server.env, "REPRLAB_HOME": str(tmp / "home")}
    with ray_cluster(tmp, env, worker_nodes=1, cpus_per_node=3) as running:
        yield running
