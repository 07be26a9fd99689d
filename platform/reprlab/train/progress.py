"""A live, quiet view of training on the driver: world rank 0 posts its progress to a small
actor, the driver polls it and draws one rich progress bar plus one summary line per epoch."""

from __future__ import annotations

import threading
from types import TracebackType

import ray
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from reprlab.driver_actors import on_driver_node

POLL_SECONDS = 0.5
SHOWN_SUFFIXES = ("classifier_acc", "online_linear_acc", "knn_acc", "shot_acc", "bad_rows")
"""Epoch metrics worth a place on the summary line (besides loss, images/s and time)."""


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Where rank 0 posts its position in the epoch and each finished epoch's metrics."""

    def __init__(self) -> None:
        self.position: tuple[int, int, int, float] | None = None
        self.epochs: list[dict[str, float]] = []

    def step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        self.position = (epoch, step, steps, loss)

    def epoch_end(self, metrics: dict[str, float]) -> None:
        self.epochs.append(metrics)

    def read(self, seen: int) -> tuple[tuple[int, int, int, float] | None, list[dict]]:
        """The latest position and the epochs finished after the first `seen`."""
        return self.position, self.epochs[seen:]


def epoch_line(metrics: dict[str, float], epochs: int) -> str:
    """One epoch's summary: epoch, loss, the monitors' metrics, images/s and time."""
    shown = "".join(
        f"  {key.rsplit('/', 1)[-1]} {value:.3f}"
        for key, value in metrics.items()
        if key.endswith(SHOWN_SUFFIXES)
        and not key.startswith("train/")
        and (value or not key.endswith("bad_rows"))
    )
    return (
        f"epoch {int(metrics['epoch'])}/{epochs}  loss {metrics['train/loss']:.4f}{shown}"
        f"  {metrics['train/images_per_s']:.0f} img/s  {metrics['train/epoch_time_s']:.1f} s"
    )


class LiveProgress:
    """Context manager around a fit: creates the ProgressBoard (`board`, for the workers),
    draws the bar while training runs, and removes both afterwards."""

    def __init__(self, console: Console, epochs: int) -> None:
        self.console = console
        self.epochs = epochs
        self.first_epoch: int | None = None  # learnt from rank 0's first post (resumed runs)
        self.board: ray.actor.ActorHandle | None = None
        self._seen = 0
        self._stop = threading.Event()
        self._progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._thread = threading.Thread(target=self._poll_until_stopped, daemon=True)

    def __enter__(self) -> LiveProgress:
        self.board = ProgressBoard.options(scheduling_strategy=on_driver_node()).remote()
        self._progress.start()
        self._task = self._progress.add_task(
            "train", total=None, epoch="-", epochs=self.epochs, loss="-", rate=""
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        if kind is None:
            self._poll()
        self._progress.stop()
        ray.kill(self.board)

    def _poll_until_stopped(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._poll()

    def _poll(self) -> None:
        position, finished = ray.get(self.board.read.remote(self._seen))
        self._seen += len(finished)
        for metrics in finished:
            self._progress.console.print(epoch_line(metrics, self.epochs), highlight=False)
            self._progress.update(self._task, rate=f"{metrics['train/images_per_s']:.0f} img/s")
        if position is None:
            return
        epoch, step, steps, loss = position
        if self.first_epoch is None:
            self.first_epoch = epoch
            self._progress.update(self._task, total=(self.epochs - epoch) * steps)
        if epoch < self.first_epoch + self._seen:
            epoch, step = self.first_epoch + self._seen, 0  # that epoch finished: next one
        done = (epoch - self.first_epoch) * steps + step
        self._progress.update(self._task, completed=done, epoch=epoch + 1, loss=f"{loss:.4f}")
