"""The raylet's own messages (worker start-up floods, OOM kills) reach the driver outside the
worker-line dispatcher; inside a RaySession they go to the log file like every Ray line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import ray
from ray._private import worker as ray_worker

from reprlab.train.session import RaySession

pytestmark = pytest.mark.integration

FLOOD = "WARNING: 8 PYTHON worker processes have been started on node: abc"


def test_the_raylets_messages_go_to_the_log_file(ray_cluster, tmp_path, capsys) -> None:
    printer = ray_worker.print_to_stdstream
    log = tmp_path / "ray.log"
    with RaySession(log, worker_warnings=False):
        ray_worker.print_to_stdstream({"lines": [FLOOD], "pid": "raylet", "is_err": False}, False)
    assert ray_worker.print_to_stdstream is printer  # Ray's own printer is back after
    assert ray.is_initialized()  # a session that found Ray running leaves it running
    assert f"(raylet) {FLOOD}" in log.read_text()
    shown = capsys.readouterr()
    assert "PYTHON worker processes" not in shown.out + shown.err


STARTS_AND_ENDS_RAY = """
import sys
from pathlib import Path

import ray

from reprlab.train.session import RaySession

with RaySession(Path(sys.argv[1])):
    assert ray.is_initialized()
assert not ray.is_initialized(), "Ray still up after the session that started it"
"""


def test_a_session_that_started_ray_shuts_it_down_before_its_printers_come_back(tmp_path):
    """Else lines of actors that outlive the work (Train's placement-group cleaner) reached
    the console after a sweep's table."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", STARTS_AND_ENDS_RAY, str(tmp_path / "ray.log")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
