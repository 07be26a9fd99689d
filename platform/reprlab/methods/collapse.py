"""Collapse detection for self-distillation and clustering objectives (DINO, SwAV): a signal
that stays at its degenerate value means the encoder maps every image to the same output, so
training stops with a one-line reason instead of finishing with a useless encoder."""

from __future__ import annotations


class RepresentationCollapse(RuntimeError):
    """The representation collapsed: every image gets the same output, so training stopped."""


class CollapseMonitor:
    """Raise RepresentationCollapse when `signal` has been at or below `threshold` for
    `patience` consecutive updates, not counting the first `grace_steps` (early training may
    pass through a degenerate state it leaves again).

    The value must be a global-batch statistic, identical on every worker, so that all workers
    raise at the same step rather than one leaving the others waiting in a collective."""

    def __init__(
        self,
        method: str,
        signal: str,
        threshold: float,
        patience: int,
        grace_steps: int = 0,
        unit: str = "",
        advice: str = "",
    ) -> None:
        if patience < 1 or grace_steps < 0:
            raise ValueError(
                f"need patience >= 1 and grace_steps >= 0, got {patience}, {grace_steps}"
            )
        self.method, self.signal, self.unit, self.advice = method, signal, unit, advice
        self.threshold = threshold
        self.patience = patience
        self.grace_steps = grace_steps
        self.updates = 0
        self.streak = 0

    def update(self, value: float) -> None:
        """Record one step's value; raise once the collapse has lasted `patience` steps."""
        self.updates += 1
        if self.updates <= self.grace_steps or value > self.threshold:
            self.streak = 0
            return
        self.streak += 1
        if self.streak >= self.patience:
            raise RepresentationCollapse(self.message(value))

    def message(self, value: float) -> str:
        """One line: method, signal, value, threshold, duration and what to change."""
        unit = f" {self.unit}" if self.unit else ""
        advice = f"; {self.advice}" if self.advice else ""
        line = (
            f"{self.method} collapsed: {self.signal} {value:.3g}{unit} <= {self.threshold:.3g} "
            f"for {self.patience} steps; the encoder is useless{advice}"
        )
        return " ".join(line.split())


def collapse_among(error: BaseException) -> RepresentationCollapse | None:
    """The RepresentationCollapse behind `error` (a training failure: Ray wraps a worker's
    exception in its own, and keeps each worker's in `worker_failures`), as a fresh exception
    with the one-line message; None when the failure was something else."""
    pending: list[object] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if type(current) is RepresentationCollapse:
            return RepresentationCollapse(*current.args)
        pending += [current.__cause__, current.__context__, getattr(current, "cause", None)]
        failures = getattr(current, "worker_failures", None)
        if isinstance(failures, dict):
            pending += list(failures.values())
        elif isinstance(failures, list | tuple):
            pending += list(failures)
    return None
