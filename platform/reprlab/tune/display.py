"""The live view of a sweep on the driver: one table (trial, its values, epoch, metric, state),
fed by Tune's trial events, instead of Tune's own log."""

from __future__ import annotations

from typing import Any

import ray.tune
from rich.table import Table


def short_value(value: Any) -> str:
    """A sampled value as a table shows it: 4 significant digits for floats."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class SweepBoard(ray.tune.Callback):
    """Tune callback keeping each trial's values, epoch, latest and best metric and state;
    `table()` draws them. Holds only plain data, so Tune can pickle it with the sweep."""

    def __init__(self, keys: tuple[str, ...], metric: str, mode: str, epochs: int) -> None:
        self.keys, self.metric, self.mode, self.epochs = keys, metric, mode, epochs
        self.rows: dict[str, dict[str, Any]] = {}

    def _update(self, trial: Any) -> None:
        result = trial.last_result or {}
        row = self.rows.setdefault(trial.trial_id, {"metric": None, "epoch": 0})
        row["values"] = {key: trial.config.get(key) for key in self.keys}
        if self.metric in result:
            row["metric"] = result[self.metric]
            row["epoch"] = int(result.get("epoch", row["epoch"]))
        state = trial.status.lower()
        if state == "terminated":
            state = "finished" if row["epoch"] >= self.epochs else "stopped early"
        row["state"] = {"error": "failed"}.get(state, state)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        for trial in trials:
            self._update(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in trials:
            self._update(trial)

    def unfinished(self) -> list[str]:
        """Trials that are neither finished, stopped early nor failed: an interrupted sweep."""
        done = ("finished", "stopped early", "failed")
        return [trial for trial, row in self.rows.items() if row["state"] not in done]

    def table(self) -> Table:
        """The current table, the best trial's metric in bold."""
        table = Table(title=f"sweep: {self.metric} ({self.mode})", title_justify="left")
        for column in ("trial", *self.keys, "epoch", self.metric, "state"):
            table.add_column(column, justify="left" if column in ("trial", "state") else "right")
        scored = [row["metric"] for row in self.rows.values() if row["metric"] is not None]
        best = (max if self.mode == "max" else min)(scored) if scored else None
        for trial_id, row in self.rows.items():
            metric = row["metric"]
            shown = "-" if metric is None else f"{metric:.4f}"
            if metric is not None and metric == best:
                shown = f"[bold]{shown}[/bold]"
            table.add_row(
                trial_id.rsplit("_", 1)[-1],
                *(short_value(row["values"][key]) for key in self.keys),
                f"{row['epoch']}/{self.epochs}",
                shown,
                row["state"],
            )
        return table
