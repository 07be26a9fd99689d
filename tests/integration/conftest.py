"""One real local Ray instance for the whole integration session, budgeted to 2 CPUs."""

from __future__ import annotations

import pytest
import ray


@pytest.fixture(scope="session")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
