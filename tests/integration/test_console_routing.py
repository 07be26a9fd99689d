"""The raylet's own messages (worker start-up floods, OOM kills) reach the driver outside the
worker-line dispatcher; inside a RaySession they go to the log file like every Ray line."""

from __future__ import annotations

import logging

import pytest
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
    assert f"(raylet) {FLOOD}" in log.read_text()
    shown = capsys.readouterr()
    assert "PYTHON worker processes" not in shown.out + shown.err


def test_rays_token_authentication_notice_stays_off_the_console(ray_cluster, tmp_path) -> None:
    # Ray warns at every local start that token authentication is on: its default, not news
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    with RaySession(tmp_path / "ray.log"):
        assert not notice.isEnabledFor(logging.WARNING)
    assert notice.isEnabledFor(logging.WARNING)
