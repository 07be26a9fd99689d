"""CollapseMonitor: trips after `patience` collapsed steps past the grace period, never on a
healthy or briefly degenerate signal, and says why in one line."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reprlab.methods.collapse import CollapseMonitor, RepresentationCollapse, collapse_among
from reprlab.methods.dino import teacher_entropies


def _information(embeddings: torch.Tensor) -> float:
    """DINO's collapse signal for teacher logits `embeddings` at temperature 0.04."""
    entropy, mean_entropy = teacher_entropies(F.softmax(embeddings / 0.04, dim=1))
    return float(mean_entropy - entropy)


def _monitor(grace_steps: int = 0) -> CollapseMonitor:
    return CollapseMonitor(
        "dino", "teacher information", 0.05, patience=4, grace_steps=grace_steps, unit="nats"
    )


def test_constant_embedding_trips_after_patience_steps() -> None:
    monitor = _monitor()
    constant = torch.randn(1, 16).expand(32, 16)
    assert _information(constant) == pytest.approx(0, abs=1e-6)  # float32 entropies
    for _ in range(3):
        monitor.update(_information(constant))
    with pytest.raises(RepresentationCollapse, match="^dino collapsed: teacher information"):
        monitor.update(_information(constant))


def test_uniform_output_trips_too() -> None:
    monitor = _monitor()
    uniform = torch.zeros(32, 16)
    entropy, _ = teacher_entropies(F.softmax(uniform, dim=1))
    assert float(entropy) == pytest.approx(math.log(16))
    with pytest.raises(RepresentationCollapse):
        for _ in range(4):
            monitor.update(_information(uniform))


def test_healthy_signal_never_trips() -> None:
    monitor = _monitor()
    generator = torch.Generator().manual_seed(0)
    for _ in range(500):
        monitor.update(_information(torch.randn(32, 16, generator=generator)))
    assert monitor.streak == 0


def test_grace_steps_and_short_dips_do_not_trip() -> None:
    monitor = _monitor(grace_steps=10)
    for _ in range(10):
        monitor.update(0.0)
    for _ in range(20):
        for value in (0.0, 0.0, 0.0, 1.0):
            monitor.update(value)
    with pytest.raises(RepresentationCollapse):
        for _ in range(4):
            monitor.update(0.0)


def test_message_is_one_line_with_method_signal_value_and_threshold() -> None:
    monitor = CollapseMonitor(
        "swav", "prototypes in use", 1, patience=1, advice="use a queue\nor lower epsilon"
    )
    with pytest.raises(RepresentationCollapse) as caught:
        monitor.update(1)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("swav collapsed: prototypes in use 1 <= 1 for 1 steps")
    assert message.endswith("use a queue or lower epsilon")


def test_invalid_patience_is_refused() -> None:
    with pytest.raises(ValueError, match="patience"):
        CollapseMonitor("dino", "x", 0.1, patience=0)


class _WorkersFailed(RuntimeError):
    """Shaped like Ray Train's WorkerGroupError: each rank's exception in `worker_failures`."""

    def __init__(self, failures: object) -> None:
        super().__init__("Training failed due to worker errors")
        self.worker_failures = failures
        self.cause = "not an exception"


def test_the_collapse_is_found_behind_rays_wrapping_and_other_failures_pass() -> None:
    collapse = RepresentationCollapse("swav collapsed: 1 prototype in use")
    for failures in ({0: ValueError("other"), 1: collapse}, [ValueError("other"), collapse]):
        try:
            raise RuntimeError("TrainingFailedError") from _WorkersFailed(failures)
        except RuntimeError as error:
            found = collapse_among(error)
        assert found is not None and str(found) == str(collapse)
    assert collapse_among(_WorkersFailed({0: ValueError("out of memory")})) is None
    assert collapse_among(_WorkersFailed(None)) is None
