"""One real local Ray instance for all integration tests, budgeted to 2 CPUs, shut down
after the last of them so it does not slow the unit tests."""

from __future__ import annotations

import pytest
import ray


@pytest.fixture(scope="package")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
