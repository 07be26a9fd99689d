"""The run's phases on their own, without Ray: prepare (dataset verified once, job checked
against it), the record (MLflow run + run record + preview), evaluate (the final probes)."""

from __future__ import annotations

import shutil

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from reprlab.config import ConfigError, validate_job
from reprlab.data import manifest
from reprlab.data.catalog import ingest
from reprlab.runs import RunRecord, find_trained
from reprlab.train.build import make_method, make_training_module
from reprlab.train.checkpoint import TrainState, save_checkpoint
from reprlab.train.optim import make_optimizer
from reprlab.train.prepare import check_job_fits_dataset, prepare
from reprlab.train.run import evaluate, log_preview, open_record
from reprlab.train.sources import batch_source


def digits_job(**sections):
    base = {
        "name": "phases",
        "data": {"dataset": "digits", "image_size": 8, "batch_size": 64},
        "model": {"backbone": "conv4", "width": 8},
        "tracking": {"experiment": "phases", "augment_grid_pairs": 3},
    }
    return validate_job(base | sections)


def test_prepare_hashes_every_shard_once(monkeypatch) -> None:
    ingest("digits")
    hashed = []
    real = manifest.sha256
    monkeypatch.setattr(manifest, "sha256", lambda path: hashed.append(path) or real(path))
    prepared = prepare(digits_job())
    assert len(hashed) == len(prepared.dataset.manifest["shards"]) == len(set(hashed))
    assert prepared.run_name.startswith("phases-") and prepared.resumed is None
    assert prepared.storage.name == prepared.run_name
    assert prepared.dataset.in_chans == 1 and prepared.dataset.num_classes == 10


def test_a_classifier_for_another_class_count_fails_before_ray() -> None:
    ingest("digits")
    job = digits_job(method="supervised", method_args={"num_classes": 7})
    with pytest.raises(ConfigError, match=r"method_args.num_classes: digits has 10 classes; "):
        prepare(job)
    assert prepare(digits_job(method="supervised", method_args={"num_classes": 10}))


def test_resume_of_an_unknown_run_names_the_runs_there() -> None:
    ingest("digits")
    with pytest.raises(ConfigError, match=r"--resume: no run named 'gone'"):
        prepare(digits_job(), resume="gone")


def test_the_record_opens_the_mlflow_run_and_writes_the_run_record() -> None:
    ingest("digits")
    prepared = prepare(digits_job())
    record = open_record(prepared)
    assert RunRecord.load(prepared.storage) == record
    run = MlflowClient(record.tracking_uri).get_run(record.mlflow_run_id)
    assert run.info.run_name == prepared.run_name and run.info.status == "RUNNING"
    assert run.data.params["data.dataset"] == "digits"
    assert run.data.tags["reprlab.method"] == "simclr"
    with mlflow.start_run(run_id=record.mlflow_run_id):
        log_preview(prepared)
    artifacts = MlflowClient(record.tracking_uri).list_artifacts(record.mlflow_run_id, "augment")
    assert [a.path for a in artifacts] == ["augment/view_pairs.png"]

    again = open_record(prepare(digits_job(), resume=prepared.run_name))
    assert again.mlflow_run_id == record.mlflow_run_id  # resume continues the same MLflow run


def test_a_run_recorded_on_another_machine_is_found_by_its_mlflow_run_id(tmp_path) -> None:
    ingest("digits")
    shared = tmp_path / "shared"  # the checkpoints' shared storage, as s3:// would be
    prepared = prepare(digits_job(storage={"path": str(shared), "shared": True}))
    record = open_record(prepared)
    job = prepared.job
    module = make_training_module(job, 1, 10)
    checkpoint = shared / prepared.run_name / "checkpoint_2026-11-29_20-00-00.1"
    checkpoint.mkdir(parents=True)
    save_checkpoint(checkpoint, module, make_optimizer(job, module), TrainState(1, 5))
    shutil.rmtree(prepared.storage)  # the driver's folder stayed on the cluster's head

    found, local = find_trained(record.mlflow_run_id)
    assert (found.run_name, found.job, found.mlflow_run_id) == (
        record.run_name,
        record.job,
        record.mlflow_run_id,
    )
    assert found.storage == prepared.storage
    assert (local / "state.pt").read_bytes() == (checkpoint / "state.pt").read_bytes()

    with mlflow.start_run() as other:  # an MLflow run reprlab did not record
        pass
    with pytest.raises(ValueError, match=rf"{other.info.run_id}: MLflow run '.+' has no"):
        find_trained(other.info.run_id)


def test_evaluate_scores_the_frozen_encoder_with_the_jobs_probes() -> None:
    ingest("digits")
    prepared = prepare(digits_job(eval={"knn": False, "retrieval": False, "clustering": False}))
    metrics = evaluate(prepared, make_method(prepared.job, prepared.dataset.in_chans))
    assert set(metrics) == {"eval/linear_probe_acc"}
    assert 0.3 < metrics["eval/linear_probe_acc"] <= 1  # a random conv4 on digits, 10 classes
    off = {"knn": False, "linear_probe": False, "retrieval": False, "clustering": False}
    nothing = prepare(digits_job(eval=off))
    assert evaluate(nothing, make_method(nothing.job, 1)) == {}
    embedded = prepare(digits_job(eval=off | {"clustering": True, "retrieval_split": "train"}))
    metrics = evaluate(embedded, make_method(embedded.job, 1))
    scores = {"clustering_acc", "clustering_nmi", "clustering_ari"}  # features and projection
    assert set(metrics) == {f"eval/{space}{key}" for space in ("", "projection_") for key in scores}


def test_a_retrieval_split_the_dataset_lacks_fails_before_ray() -> None:
    ingest("digits")
    with pytest.raises(ConfigError, match="eval.retrieval_split: 'dev' is not a split of digits"):
        prepare(digits_job(eval={"retrieval_split": "dev"}))


def test_an_episodic_job_logs_its_episode_even_without_augmentation_grids(tmp_path) -> None:
    ingest("glyphs", tmp_path)
    job = validate_job(
        {
            "name": "episodes",
            "method": "protonet",
            "data": {
                "dataset": str(tmp_path / "glyphs"),
                "eval_split": "val",
                "episodes": {"ways": 3, "shots": 1, "queries": 1, "tasks_per_step": 2},
            },
            "eval": {"linear_probe": False, "knn": False, "online_linear": False},
            "tracking": {"augment_grid_pairs": 0},
        }
    )
    prepared = prepare(job)
    record = open_record(prepared)
    with mlflow.start_run(run_id=record.mlflow_run_id):
        log_preview(prepared)
    artifacts = MlflowClient(record.tracking_uri).list_artifacts(record.mlflow_run_id, "episodes")
    assert [a.path for a in artifacts] == ["episodes/train_episode.png"]
    ingest("digits")
    views = prepare(digits_job(tracking={"augment_grid_pairs": 0}))
    assert batch_source(views.job, views.dataset).preview_figure(0, 0) is None


def test_retrieval_of_a_split_without_two_images_of_a_class_fails_before_ray(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest("digits")
    dataset = prepare(digits_job()).dataset
    singletons = {"0": 1, "1": 1}
    monkeypatch.setitem(dataset.manifest["splits"]["test"], "per_class", singletons)
    with pytest.raises(ConfigError, match="eval.retrieval: no class of digits's test split"):
        check_job_fits_dataset(digits_job(), dataset)
    check_job_fits_dataset(digits_job(eval={"retrieval": False}), dataset)
