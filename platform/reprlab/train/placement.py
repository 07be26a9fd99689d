"""What a job needs of the cluster it lands on: on more than one node every worker must reach
its checkpoints and its tracking store, so node-local storage or a local MLflow store is
refused there, after Ray is up and before anything is recorded or trained."""

from __future__ import annotations

import ray

from reprlab.config import ConfigError, JobConfig

LOCAL_STORES = ("sqlite:", "file:", "/", ".")
"""Tracking URIs that name a file on the driver's node."""


def cluster_problem(job: JobConfig, tracking_uri: str, nodes: int) -> str | None:
    """Why `job` cannot run on a cluster of `nodes` alive nodes (one line), or None."""
    if nodes <= 1:
        return None
    if not job.storage.is_shared:
        where = job.storage.path or "the runs folder of the driver's node"
        return (
            f"storage.path: the cluster has {nodes} nodes and checkpoints in {where} are not "
            "reachable from the others; use s3://BUCKET/PREFIX (or a mounted path with "
            "storage.shared: true)"
        )
    if tracking_uri.startswith(LOCAL_STORES):
        return (
            f"tracking.tracking_uri: the cluster has {nodes} nodes and {tracking_uri} is a file "
            "on one of them; set MLFLOW_TRACKING_URI (or tracking.tracking_uri) to an MLflow "
            "server, http://HOST:PORT"
        )
    return None


def check_fits_cluster(job: JobConfig, tracking_uri: str) -> None:
    """ConfigError (one line) when the running Ray cluster cannot run `job` (cluster_problem)."""
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    problem = cluster_problem(job, tracking_uri, nodes)
    if problem:
        raise ConfigError(problem)
