"""A real Ray cluster of several nodes on 127.0.0.1 for the cluster suite: a head (GCS,
dashboard and Jobs API) and worker nodes, each its own `ray start --block` process tree, with
token authentication on. A node can be killed mid-run, as a lost machine would be."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from .servers import (
    HOST,
    free_port,
    process_tree,
    server_environ,
    session_processes,
    signal_all,
    started_process,
)

RAY = str(Path(sys.executable).parent / "ray")
NODE_WAIT_S = 90.0


@dataclass
class RayCluster:
    """The cluster's addresses, its token file, the environment its nodes run with and a
    client needs (`client_env`), and its live node processes."""

    dashboard: str
    gcs: str
    token_path: Path
    node_env: Mapping[str, str]
    tmp: Path
    cpus_per_node: int
    stack: ExitStack
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def client_env(self) -> dict[str, str]:
        """What `reprlab submit` / `reprlab jobs` need to reach the cluster."""
        return {"RAY_ADDRESS": self.dashboard, "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    def alive_nodes(self) -> int:
        """Nodes the GCS counts alive, through the State API (with the token)."""
        token = self.token_path.read_text().strip()
        reply = requests.get(
            f"{self.dashboard}/api/v0/nodes",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        reply.raise_for_status()
        nodes = reply.json()["data"]["result"]["result"]
        return sum(1 for node in nodes if node["state"] == "ALIVE")

    def wait_for_nodes(self, count: int, timeout: float = NODE_WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_nodes() != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster has {self.alive_nodes()} alive nodes, not {count}")
            time.sleep(0.5)

    def add_worker(self) -> subprocess.Popen:
        """Start one more worker node and wait until the cluster counts it."""
        index = len(self.workers)
        # its own temp dir, as on its own machine: nodes sharing one would share (and delete)
        # each other's unpacked runtime environments
        node_temp = tempfile.mkdtemp(prefix=f"rl-w{index}-", dir="/tmp")
        self.stack.callback(shutil.rmtree, node_temp, ignore_errors=True)
        command = [
            RAY, "start", "--block", f"--address={self.gcs}", f"--node-ip-address={HOST}",
            f"--num-cpus={self.cpus_per_node}", "--num-gpus=0", f"--temp-dir={node_temp}",
        ]  # fmt: skip
        before = self.alive_nodes()
        process = self.stack.enter_context(
            started_process(
                command,
                env=self.node_env,
                log_path=self.tmp / f"worker{index}.log",
                ready=lambda: True,
            )
        )
        self.workers.append(process)
        self.wait_for_nodes(before + 1)
        return process

    def lose_a_worker(self) -> None:
        """SIGKILL every process of the newest worker node at once, as if its machine died."""
        process = self.workers.pop()
        signal_all([*process_tree(process.pid), *session_processes(process.pid)], kill=True)
        process.wait(timeout=10)


@contextmanager
def ray_cluster(
    tmp: Path, env: Mapping[str, str], worker_nodes: int = 1, cpus_per_node: int = 2
) -> Iterator[RayCluster]:
    """A head and `worker_nodes` worker nodes with a fresh token; every node runs with `env`
    (plus the token settings and this virtualenv first on PATH, as a cluster image would)."""
    token_path = tmp / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    venv_bin = str(Path(sys.executable).parent)
    node_env = server_environ(
        {
            **env,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token_path),
            "PATH": f"{venv_bin}:{server_environ({})['PATH']}",
        }
    )
    ray_temp = tempfile.mkdtemp(prefix="rl-", dir="/tmp")  # AF_UNIX paths: <= 107 bytes
    gcs_port, dashboard_port = free_port(), free_port()
    dashboard = f"http://{HOST}:{dashboard_port}"
    head = [
        RAY, "start", "--head", "--block", f"--port={gcs_port}", f"--node-ip-address={HOST}",
        "--include-dashboard=true", f"--dashboard-host={HOST}",
        f"--dashboard-port={dashboard_port}", f"--num-cpus={cpus_per_node}", "--num-gpus=0",
        f"--temp-dir={ray_temp}",
    ]  # fmt: skip
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, ray_temp, ignore_errors=True)
        stack.enter_context(
            started_process(
                head,
                env=node_env,
                log_path=tmp / "head.log",
                ready=lambda: _answers(f"{dashboard}/api/version"),
                timeout=120,
            )
        )
        cluster = RayCluster(
            dashboard, f"{HOST}:{gcs_port}", token_path, node_env, tmp, cpus_per_node, stack
        )
        cluster.wait_for_nodes(1)
        for _ in range(worker_nodes):
            cluster.add_worker()
        yield cluster


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False
