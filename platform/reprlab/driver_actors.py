"""Where the actors a driver owns (its progress board, its bad-row counter) are placed."""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


def on_driver_node() -> NodeAffinitySchedulingStrategy:
    """Pins an actor to the driver's own node: left to Ray it may land on a worker node and
    die with it, failing a run that Train itself had recovered."""
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
