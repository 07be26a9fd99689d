"""A sweep before Ray: planning against the job (scheduler, metric, search, trial count),
one-line refusals naming file and key, the CPU budget that sets how many trials run at once,
the schedulers, the sweep record, choosing the best trial and the command that reruns it,
and the live table. (Real sweeps: tests/integration/test_sweep.py.)"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
from typer.testing import CliRunner

from reprlab.cli import app
from reprlab.config import ConfigError
from reprlab.tune.display import SweepBoard
from reprlab.tune.results import TrialOutcome, best_outcome, reproduce_command, trial_id_in
from reprlab.tune.sweep import (
    SweepRecord,
    SweepSettings,
    concurrent_trials,
    list_sweeps,
    plan_sweep,
    scheduler_of,
    sweeps_root,
)

ROOT = Path(__file__).parents[2]
QUICKSTART = str(ROOT / "jobs" / "quickstart.yaml")
TEMPERATURE = str(ROOT / "tune_spaces" / "simclr_temperature.yaml")
MAML = str(ROOT / "jobs" / "maml_glyphs.yaml")
MAML_SPACE = str(ROOT / "tune_spaces" / "maml_inner.yaml")


def settings(**changes) -> SweepSettings:
    return SweepSettings(job_file=QUICKSTART, space_file=TEMPERATURE, **changes)


def test_a_plan_resolves_scheduler_metric_mode_and_trials() -> None:
    plan = plan_sweep(settings(samples=6, overrides=("optim.epochs=10",)))
    assert (plan.scheduler, plan.metric, plan.mode, plan.trials) == (
        "asha",
        "online_linear_acc",
        "max",
        6,
    )
    assert plan.job.optim.epochs == 10
    assert plan.name.startswith("quickstart-simclr_temperature-")
    assert not plan.single_process


def test_an_episodic_plan_scores_the_validation_few_shot_accuracy() -> None:
    plan = plan_sweep(SweepSettings(job_file=MAML, space_file=MAML_SPACE))
    shots = plan.job.eval.fewshot.shots[0]
    assert plan.metric == f"fewshot/val_{plan.job.eval.fewshot.ways}way_{shots}shot_acc"


@pytest.mark.parametrize(
    "changes,expected",
    [
        (
            {"scheduler": "pbt"},
            "quickstart.yaml: scaling.num_workers: --scheduler pbt runs each trial in one process",
        ),
        ({"scheduler": "hyperband"}, "--scheduler: allowed: fifo, asha, pbt, got 'hyperband'"),
        ({"search": "bayes"}, "--search: allowed: random, grid, optuna, got 'bayes'"),
        ({"search": "grid"}, "method_args.temperature"),
        (
            {"metric": "knn_acc"},
            "--metric: the job does not report 'knn_acc' each epoch; online_linear_acc",
        ),
        ({"mode": "up"}, "--mode: allowed: max, min, got 'up'"),
        (
            {"scheduler": "pbt", "search": "optuna", "overrides": ("scaling.num_workers=1",)},
            "--search: --scheduler pbt samples and perturbs its own population",
        ),
        ({"overrides": ("optim.epochs=0",)}, "optim.epochs: must be > 0, got 0"),
    ],
)
def test_a_sweep_that_cannot_run_fails_in_one_line(changes: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        plan_sweep(settings(**changes))
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_a_method_fitted_in_closed_form_is_not_swept() -> None:
    pca = str(ROOT / "jobs" / "classical" / "pca_mnist5k.yaml")
    with pytest.raises(ConfigError, match="method: 'pca' is fitted in closed form"):
        plan_sweep(SweepSettings(job_file=pca, space_file=TEMPERATURE))


def test_pbt_runs_on_one_worker_in_one_process() -> None:
    plan = plan_sweep(settings(scheduler="pbt", overrides=("scaling.num_workers=1",)))
    assert plan.single_process
    assert plan.trials == 8


def test_trials_at_once_fit_their_workers_and_data_cpus_on_the_cluster() -> None:
    plan = plan_sweep(settings())  # 2 workers x 0.5 CPU + 1 Ray Data CPU = 2 CPUs a trial
    assert concurrent_trials(plan, {"CPU": 2.0}) == 1
    assert concurrent_trials(plan, {"CPU": 7.0}) == 3
    assert concurrent_trials(plan, {"CPU": 1.0}) == 1  # one at a time even when short
    small = plan_sweep(
        settings(scheduler="pbt", overrides=("scaling.num_workers=1", "data.data_cpus=0.5"))
    )
    assert concurrent_trials(small, {"CPU": 2.0}) == 1  # 0.5 + a whole CPU for Ray Data
    assert concurrent_trials(small, {"CPU": 3.0}) == 2
    assert concurrent_trials(plan_sweep(settings(max_concurrent=3)), {"CPU": 2.0}) == 3


def test_asha_rungs_are_epochs_and_survivors_finish_their_run() -> None:
    scheduler = scheduler_of(plan_sweep(settings(overrides=("optim.epochs=24",))))
    assert scheduler._time_attr == "epoch"
    assert scheduler._max_t == 24
    assert scheduler._stop_last_trials is False
    rungs = [milestone for milestone, _ in scheduler._brackets[0]._rungs]
    assert sorted(rungs) == [3, 12]  # grace 24 // 8, then x4 below max_t


def test_pbt_perturbs_the_space_every_interval_and_clamps_into_bounds(tmp_path: Path) -> None:
    pbt_space = str(ROOT / "tune_spaces" / "augment_policy_pbt.yaml")
    plan = plan_sweep(
        SweepSettings(
            job_file=QUICKSTART, space_file=pbt_space, overrides=("scaling.num_workers=1",)
        )
    )
    scheduler = scheduler_of(plan)
    assert plan.scheduler == "pbt"
    assert scheduler._perturbation_interval == plan.space.pbt.perturbation_interval
    assert scheduler._synch is plan.space.pbt.synch is True
    assert set(scheduler._hyperparam_mutations) == set(plan.space.keys)


def test_the_sweep_record_round_trips_and_lists_newest_first() -> None:
    for name, created in (("old", 1.0), ("new", 2.0)):
        SweepRecord(
            name=name,
            settings=settings(overrides=("optim.epochs=3",)),
            job="quickstart",
            space="simclr_temperature",
            trials=4,
            parent_run_id="abc",
            tracking_uri="sqlite:///x.db",
            created=created,
        ).save()
    loaded = SweepRecord.load("old")
    assert loaded.settings == settings(overrides=("optim.epochs=3",))
    assert [record.name for record in list_sweeps()] == ["new", "old"]
    with pytest.raises(ConfigError, match="no sweep named 'nope'.*sweeps: new, old"):
        SweepRecord.load("nope")


def outcome(trial: str, metric: float | None, state: str, temperature: float) -> TrialOutcome:
    return TrialOutcome(
        trial_id=trial,
        values={"method_args.temperature": temperature},
        epochs=10 if state == "finished" else 1,
        metric=metric,
        state=state,
        curve=([], []),
        run_id=None,
    )


def test_the_best_trial_is_among_those_that_trained_every_epoch() -> None:
    plan = plan_sweep(settings())
    outcomes = [
        outcome("a", 0.95, "stopped early", 0.1),  # higher, but at an early rung
        outcome("b", 0.90, "finished", 0.2),
        outcome("c", 0.93, "finished", 0.5),
        outcome("d", None, "failed", 0.7),
    ]
    assert best_outcome(plan, outcomes).trial_id == "c"
    minimising = plan_sweep(settings(mode="min"))
    assert best_outcome(minimising, outcomes).trial_id == "b"
    assert best_outcome(plan, [outcomes[0]]).trial_id == "a"  # none finished: best scored
    assert best_outcome(plan, [outcomes[3]]) is None


def test_the_reproduce_command_is_the_job_its_overrides_and_the_values() -> None:
    plan = plan_sweep(settings(overrides=("optim.epochs=10",)))
    command = reproduce_command(plan, outcome("c", 0.93, "finished", 0.5))
    assert command == f"reprlab run {QUICKSTART} optim.epochs=10 method_args.temperature=0.5"


def fake_trial(trial_id: str, status: str, epoch: int | None, metric: float | None):
    """The attributes of a Tune Trial the board reads."""
    result = {} if epoch is None else {"epoch": epoch, "online_linear_acc": metric}
    return SimpleNamespace(
        trial_id=trial_id,
        status=status,
        config={"method_args.temperature": 0.25},
        last_result=result,
    )


def test_the_live_table_shows_each_trial_state_and_bolds_the_best() -> None:
    board = SweepBoard(("method_args.temperature",), "online_linear_acc", "max", epochs=10)
    trials = [
        fake_trial("x_00000", "TERMINATED", 10, 0.91),
        fake_trial("x_00001", "TERMINATED", 3, 0.80),
        fake_trial("x_00002", "RUNNING", 4, 0.85),
        fake_trial("x_00003", "ERROR", None, None),
        fake_trial("x_00004", "PENDING", None, None),
    ]
    board.on_step_begin(0, trials)
    states = [row["state"] for row in board.rows.values()]
    assert states == ["finished", "stopped early", "running", "failed", "pending"]
    table = board.table()
    cells = {column.header: list(column._cells) for column in table.columns}
    assert cells["trial"] == ["00000", "00001", "00002", "00003", "00004"]
    assert cells["epoch"] == ["10/10", "3/10", "4/10", "0/10", "0/10"]
    assert cells["online_linear_acc"][0] == "[bold]0.9100[/bold]"
    assert cells["online_linear_acc"][3] == "-"


def test_cli_dry_run_prints_the_space_and_trial_count_without_ray() -> None:
    result = CliRunner().invoke(
        app, ["tune", QUICKSTART, "--space", TEMPERATURE, "--samples", "6", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "6 trials, asha" in result.output
    assert "loguniform [0.05, 1.0]" in result.output
    assert not ray.is_initialized()


def test_cli_refuses_a_space_key_the_job_lacks_before_ray(tmp_path: Path) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text("description: d\nparams:\n  method_args.temprature: {uniform: [0.1, 1]}\n")
    result = CliRunner().invoke(app, ["tune", QUICKSTART, "--space", str(space)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(space) in lines[0] and "method_args.temprature" in lines[0]
    assert not ray.is_initialized()


def test_cli_refuses_a_dataset_not_ingested_before_ray() -> None:
    result = CliRunner().invoke(app, ["tune", QUICKSTART, "--space", TEMPERATURE, "--samples", "2"])
    assert result.exit_code == 2
    assert "data.dataset: dataset 'mnist5k' is not ingested" in result.output
    assert "run: reprlab ingest mnist5k" in result.output
    assert not ray.is_initialized()
    assert not sweeps_root().exists() or not any(sweeps_root().iterdir())


def test_cli_lists_sweeps_and_refuses_to_resume_an_unknown_one() -> None:
    SweepRecord(
        name="quickstart-simclr_temperature-1",
        settings=settings(),
        job="quickstart",
        space="simclr_temperature",
        trials=6,
        parent_run_id="abc",
        tracking_uri="sqlite:///x.db",
        finished=6,
        best={"values": {"method_args.temperature": 0.1}, "metric": 0.9123, "trial": "t"},
    ).save()
    listed = CliRunner().invoke(app, ["sweeps"])
    assert listed.exit_code == 0
    assert "quickstart-simclr_temperature-1" in listed.output
    assert "6/6" in listed.output and "0.9123" in listed.output
    refused = CliRunner().invoke(app, ["tune", "--resume", "nope"])
    assert refused.exit_code == 2 and "no sweep named 'nope'" in refused.output
    assert not ray.is_initialized()


def test_a_trial_is_named_by_its_folder() -> None:
    folder = "/x/run_trial_83944_00003_3_optim_lr=0.0005_2026-11-29_04-59-25"
    assert trial_id_in(folder) == "83944_00003"
    optuna = "/x/run_trial_585978a0_5_data_augment_blur_p=0.2307,data_augm_2026-11-29_08-21-23"
    assert trial_id_in(optuna) == "585978a0"
