"""Finding an earlier run's encoder for `reprlab eval`: by checkpoint folder, run folder or name,
newest checkpoint first, and one-line errors for anything else."""

from __future__ import annotations

import json

import pytest
import torch

from reprlab.config import validate_job
from reprlab.eval.trained import load_trained_method, resolve_trained
from reprlab.train.checkpoint import TrainState, save_checkpoint
from reprlab.train.loop import make_optimizer, make_training_module
from reprlab.train.trainer import RUN_RECORD, runs_root


def _run(name: str, checkpoints: list[str], with_job: bool = True):
    job = validate_job({"model": {"width": 8}})
    storage = runs_root() / name
    storage.mkdir(parents=True)
    record = {"mlflow_run_id": "abc", "tracking_uri": "sqlite:///x.db"}
    if with_job:
        record |= {"job": job.model_dump(mode="json"), "in_chans": 1, "num_classes": 10}
    (storage / RUN_RECORD).write_text(json.dumps(record))
    for i, folder in enumerate(checkpoints):
        torch.manual_seed(i)
        module = make_training_module(job, 1, 10)
        (storage / folder).mkdir()
        save_checkpoint(storage / folder, module, make_optimizer(job, module), TrainState(i, i))
    return storage


def test_a_run_name_resolves_to_its_newest_checkpoint_and_loads_it() -> None:
    storage = _run("r1", ["checkpoint_2026-11-23_08-00-00.1", "checkpoint_2026-11-23_09-00-00.1"])
    run = resolve_trained("r1")
    assert run.checkpoint == storage / "checkpoint_2026-11-23_09-00-00.1"
    assert run.mlflow_run_id == "abc" and run.job.model.width == 8
    assert resolve_trained(str(storage)).checkpoint == run.checkpoint
    older = resolve_trained(str(storage / "checkpoint_2026-11-23_08-00-00.1"))
    method = load_trained_method(run)
    first = load_trained_method(older)
    x = torch.rand(2, 1, 28, 28)
    assert not torch.allclose(method.embed(x), first.embed(x))
    assert not method.training


def test_unknown_source_and_old_records_fail_with_one_line() -> None:
    with pytest.raises(ValueError, match=r"nope: not a checkpoint folder") as error:
        resolve_trained("nope")
    assert "\n" not in str(error.value)
    _run("old", ["checkpoint_1"], with_job=False)
    with pytest.raises(ValueError, match=r"written by an older reprlab"):
        resolve_trained("old")
    _run("empty", [])
    with pytest.raises(ValueError, match=r"no checkpoint yet"):
        resolve_trained("empty")
