"""Finding an earlier run's encoder for `reprlab eval`: by checkpoint folder, run folder or name,
newest checkpoint first, and one-line errors for anything else."""

from __future__ import annotations

import json

import pytest
import torch

from reprlab.config import validate_job
from reprlab.runs import RUN_RECORD, RunRecord, find_trained, runs_root
from reprlab.train.build import load_trained_method, make_training_module
from reprlab.train.checkpoint import TrainState, save_checkpoint
from reprlab.train.optim import make_optimizer


def _run(name: str, checkpoints: list[str], with_job: bool = True):
    job = validate_job({"model": {"width": 8}})
    storage = runs_root() / name
    if with_job:
        RunRecord(name, storage, job, 1, 10, "abc", "sqlite:///x.db").save()
    else:
        storage.mkdir(parents=True)
        record = {"mlflow_run_id": "abc", "tracking_uri": "sqlite:///x.db"}
        (storage / RUN_RECORD).write_text(json.dumps(record))
    for i, folder in enumerate(checkpoints):
        torch.manual_seed(i)
        module = make_training_module(job, 1, 10)
        (storage / folder).mkdir()
        save_checkpoint(storage / folder, module, make_optimizer(job, module), TrainState(i, i))
    return storage


def test_a_run_name_resolves_to_its_newest_checkpoint_and_loads_it() -> None:
    storage = _run("r1", ["checkpoint_2026-11-23_08-00-00.1", "checkpoint_2026-11-23_09-00-00.1"])
    run, checkpoint = find_trained("r1")
    assert checkpoint == storage / "checkpoint_2026-11-23_09-00-00.1"
    assert run.mlflow_run_id == "abc" and run.job.model.width == 8
    assert run.storage == storage and run.run_name == "r1"
    assert find_trained(str(storage))[1] == checkpoint
    older_run, older = find_trained(str(storage / "checkpoint_2026-11-23_08-00-00.1"))
    method = load_trained_method(run, checkpoint)
    first = load_trained_method(older_run, older)
    x = torch.rand(2, 1, 28, 28)
    assert not torch.allclose(method.embed(x), first.embed(x))
    assert not method.training


def test_a_run_folder_moved_out_of_this_home_still_finds_its_checkpoints(tmp_path) -> None:
    storage = _run("r3", ["checkpoint_2026-11-23_08-00-00.1"])
    elsewhere = tmp_path / "other_home" / "runs" / "r3"
    elsewhere.parent.mkdir(parents=True)
    storage.rename(elsewhere)
    run, checkpoint = find_trained(str(elsewhere))
    assert checkpoint == elsewhere / "checkpoint_2026-11-23_08-00-00.1"
    assert run.storage == elsewhere


def test_the_record_round_trips_with_its_job() -> None:
    job = validate_job({"model": {"width": 8}, "optim": {"epochs": 3}})
    record = RunRecord("r2", runs_root() / "r2", job, 3, 7, "id", "sqlite:///y.db")
    record.save()
    assert RunRecord.load(runs_root() / "r2") == record


def test_unknown_source_and_old_records_fail_with_one_line() -> None:
    with pytest.raises(ValueError, match=r"nope: not a checkpoint folder") as error:
        find_trained("nope")
    assert "\n" not in str(error.value)
    _run("old", ["checkpoint_1"], with_job=False)
    with pytest.raises(ValueError, match=r"written by an older reprlab"):
        find_trained("old")
    _run("empty", [])
    with pytest.raises(ValueError, match=r"no checkpoint yet"):
        find_trained("empty")
