"""SIGTERM handled as Ctrl-C, so that a stopped command (`reprlab jobs stop`, a killed
terminal, Kubernetes ending a pod) unwinds its cleanup: MLflow runs end FAILED with why,
servers it started are stopped."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """For the block, SIGTERM raises KeyboardInterrupt in the main thread (elsewhere, where
    Python allows no handler, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
