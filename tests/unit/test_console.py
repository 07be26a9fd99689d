"""The quiet console: Ray's forwarded lines go to the run's log file, only warnings and errors
(or everything, verbose) reach the terminal; the epoch summary line shows what matters."""

from __future__ import annotations

from reprlab.train.progress import epoch_line
from reprlab.train.session import RaySession

INFO = "2026-11-29 02:26:46 INFO train_fn_utils.py:255 -- Reported metrics: {'epoch': 1}"
WARN = "/x/distributed.py:24: FutureWarning: all_gather is deprecated"
ERROR = "2026-11-29 02:26:46 ERROR worker.py:1 -- Traceback (most recent call last):"


def _route(tmp_path, capsys, verbose: bool, worker_warnings: bool = True) -> tuple[str, str]:
    session = RaySession(tmp_path / "ray.log", verbose=verbose, worker_warnings=worker_warnings)
    session._file = session.log_file.open("a")
    session._worker_lines({"actor_name": "RayTrainWorker", "pid": 7, "lines": [INFO, WARN, ERROR]})
    session._file.close()
    return session.log_file.read_text(), capsys.readouterr().err


def test_ray_lines_go_to_the_log_and_only_warnings_and_errors_to_the_console(tmp_path, capsys):
    logged, shown = _route(tmp_path, capsys, verbose=False)
    assert logged.splitlines() == [f"(RayTrainWorker pid=7) {line}" for line in (INFO, WARN, ERROR)]
    assert "Reported metrics" not in shown
    assert WARN in shown and ERROR in shown


def test_verbose_shows_every_ray_line(tmp_path, capsys):
    _, shown = _route(tmp_path, capsys, verbose=True)
    assert "Reported metrics" in shown


def test_a_sweep_keeps_even_worker_warnings_in_the_log(tmp_path, capsys):
    logged, shown = _route(tmp_path, capsys, verbose=False, worker_warnings=False)
    assert WARN in logged and ERROR in logged
    assert shown == ""


def test_the_epoch_line_shows_held_out_metrics_not_the_training_batch_ones() -> None:
    metrics = {
        "epoch": 3,
        "train/loss": 2.5,
        "train/online_linear_acc": 0.5,
        "online_linear_acc": 0.912,
        "knn_acc": 0.9,
        "fewshot/val_5way_1shot_acc": 0.7,
        "data/bad_rows": 0,
        "train/images_per_s": 1100.0,
        "train/epoch_time_s": 3.2,
    }
    line = epoch_line(metrics, 60)
    assert line.startswith("epoch 3/60  loss 2.5000  online_linear_acc 0.912  knn_acc 0.900")
    assert "val_5way_1shot_acc 0.700" in line and "0.500" not in line
    assert "bad_rows" not in line and line.endswith("1100 img/s  3.2 s")
    assert "bad_rows 2.000" in epoch_line(metrics | {"data/bad_rows": 2}, 60)
