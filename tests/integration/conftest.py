"""One real local Ray instance for all integration tests, budgeted to 2 CPUs, shut down
after the last of them so it does not slow the unit tests; and no Ray process it started may
outlive the shutdown."""

from __future__ import annotations

import time

import psutil
import pytest
import ray

SHUTDOWN_GRACE_S = 20.0


def ray_processes_since(started: float, session_name: str) -> list[str]:
    """Live processes created after `started` that belong to Ray: workers and actors
    (`ray::...`) and the session's own daemons (raylet, GCS, monitors)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "create_time"]):
        try:
            line = " ".join(process.info["cmdline"] or ())
            ours = process.info["create_time"] >= started
            if ours and (line.startswith("ray::") or session_name in line):
                found.append(f"{process.pid} {line[:80]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture(scope="package")
def ray_cluster():
    started = time.time() - 1
    # the dashboard serves the State API, which Ray Train inside a Tune trial needs to free the
    # workers of a trial the scheduler stopped
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = False
    session_name = ray._private.worker._global_node.session_name
    yield
    ray.shutdown()
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    while (left := ray_processes_since(started, session_name)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray processes outlived ray.shutdown(): {left}"
