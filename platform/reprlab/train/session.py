"""The driver's Ray session: connect to (or start) Ray and keep its chatter off the console.

Worker and actor lines that Ray forwards to the driver, and the driver's own `ray.*` log
records, go to the run's log file; warnings and errors still reach the console (everything
does with `verbose`). Without this a quickstart prints ~500 lines of Ray internals."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import ray
from ray._private import worker as ray_worker
from ray._private.ray_logging import global_worker_stdstream_dispatcher

RAY_PRINT_HANDLER = "ray_print_logs"
"""Name under which ray.init registers its printer of forwarded worker lines."""
RAY_LOGGERS = ("ray", "ray.data")
"""Ray's loggers that do not propagate: each gets the run's log file."""
SETTINGS_ECHO = (
    "ray.data._internal.progress",
    "ray._private.authentication.authentication_token_setup",
)
"""Loggers whose warnings only repeat a setting reprlab made on purpose (progress bars off) or
Ray's own default (token authentication on for a local cluster)."""
WORTH_SHOWING = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b|(Warning|Error):")


def ensure_ray() -> None:
    """Connect to RAY_ADDRESS when set, else start a local Ray on this machine's CPUs. Ray
    Train's print patch is off: it would echo every worker line twice."""
    if not ray.is_initialized():
        ray.init(
            address=os.environ.get("RAY_ADDRESS"),
            runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
        )
    quiet_ray_data()


def quiet_ray_data() -> None:
    """No Ray Data progress bars or plan lines from this process's datasets (a driver, or a
    Tune trial that starts a Train run)."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False  # one plan line per dataset per epoch otherwise


class RaySession:
    """Context manager: Ray up (ensure_ray), its output routed to `log_file` while inside.
    `worker_warnings=False` keeps even the workers' warnings in the file: a sweep's stopped
    trials leave noise there, and its table and MLflow already say which trial failed."""

    def __init__(self, log_file: Path, verbose: bool = False, worker_warnings: bool = True) -> None:
        self.log_file, self.verbose, self.worker_warnings = log_file, verbose, worker_warnings
        self._file: IO[str] | None = None
        self._file_handler: logging.Handler | None = None
        self._quieted: list[tuple[logging.Handler, int]] = []
        self._ray_printers: list[Any] = []
        self._quieted_loggers: list[tuple[str, int]] = []
        self._raylet_printer: Any = None

    def __enter__(self) -> RaySession:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.log_file.open("a", encoding="utf-8")
        self._file_handler = logging.StreamHandler(self._file)
        self._file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s")
        )
        for name in RAY_LOGGERS:
            logging.getLogger(name).addHandler(self._file_handler)
        if not self.verbose:
            self._quiet_console_handlers()
            for name in SETTINGS_ECHO:
                logger = logging.getLogger(name)
                self._quieted_loggers.append((name, logger.level))
                logger.setLevel(logging.ERROR)
        ensure_ray()
        dispatcher = global_worker_stdstream_dispatcher
        self._ray_printers = [h for name, h in dispatcher.handlers if name == RAY_PRINT_HANDLER]
        dispatcher.remove_handler(RAY_PRINT_HANDLER)
        global_worker_stdstream_dispatcher.add_handler(RAY_PRINT_HANDLER, self._worker_lines)
        # the raylet's messages (worker start-up, OOM kills) bypass the dispatcher
        self._raylet_printer = ray_worker.print_to_stdstream
        ray_worker.print_to_stdstream = lambda data, ignore_prefix: self._worker_lines(data)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        ray_worker.print_to_stdstream = self._raylet_printer
        dispatcher = global_worker_stdstream_dispatcher
        dispatcher.remove_handler(RAY_PRINT_HANDLER)
        for printer in self._ray_printers:
            dispatcher.add_handler(RAY_PRINT_HANDLER, printer)
        for handler, level in self._quieted:
            handler.setLevel(level)
        for name, level in self._quieted_loggers:
            logging.getLogger(name).setLevel(level)
        for name in RAY_LOGGERS:
            logging.getLogger(name).removeHandler(self._file_handler)
        self._file.close()

    def _quiet_console_handlers(self) -> None:
        """Raise every console handler of the `ray` loggers to WARNING for the session."""
        names = ["ray", *(n for n in logging.root.manager.loggerDict if n.startswith("ray."))]
        for name in names:
            for handler in logging.getLogger(name).handlers:
                console = isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler
                )
                if console and handler is not self._file_handler:
                    self._quieted.append((handler, handler.level))
                    handler.setLevel(max(handler.level, logging.WARNING))

    def _worker_lines(self, data: dict[str, Any]) -> None:
        """Ray's forwarded worker output: into the log file; the lines worth showing (or all,
        verbose) to the driver's stderr as Ray would print them."""
        pid = data.get("pid")
        source = data.get("actor_name") or data.get("task_name") or "worker"
        prefix = "(raylet) " if pid == "raylet" else f"({source} pid={pid}) "
        for line in data.get("lines", []):
            self._file.write(prefix + line + "\n")
            if self.verbose or (self.worker_warnings and WORTH_SHOWING.search(line)):
                print(prefix + line, file=sys.stderr)
        self._file.flush()
