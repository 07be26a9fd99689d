"""A pipeline end to end on Ray: a teacher stage, then a Noisy Student stage that names it; the
second stage fails before it trains, the file is fixed, and `--resume` runs only that stage, as
a child of the same MLflow parent run."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from reprlab.config import ConfigError
from reprlab.data.catalog import ingest
from reprlab.pipeline.runner import PipelineRecord, pipelines_root, run_pipeline
from reprlab.pipeline.spec import load_pipeline
from reprlab.runs import runs_root

pytestmark = pytest.mark.integration

COMMON = """
data:
  dataset: digits
  image_size: 8
  batch_size: 32
  labels_per_class: 2
  augment: {policy: weak, hflip_p: 0}
  strong_augment: {policy: strong, hflip_p: 0}
optim: {lr: 0.01, epochs: 1, warmup_epochs: 0}
scaling: {num_workers: 2}
eval: {linear_probe: false, knn: false}
tracking: {experiment: stage_jobs_own}
"""
PIPELINE = """
name: teach_then_learn
experiment: pipelines
stages:
  - {name: teacher, job: teacher.yaml}
  - name: student
    job: student.yaml
    overrides:
      model.teacher: ${stages.teacher}
      model.init_from: ${stages.teacher}
      model.width: WIDTH
"""


def _pipeline(folder: Path, student_width: int) -> Path:
    (folder / "teacher.yaml").write_text(
        "name: teacher\nmethod: supervised\nmodel: {width: 8}\n" + COMMON
    )
    student = COMMON.replace("  batch_size: 32\n", "  batch_size: 32\n  unlabelled_ratio: 1\n")
    (folder / "student.yaml").write_text("name: student\nmethod: noisy_student\n" + student)
    path = folder / "pipeline.yaml"
    path.write_text(PIPELINE.replace("WIDTH", str(student_width)))
    return path


def test_a_pipeline_resumed_after_its_first_stage_does_not_rerun_it(
    ray_cluster, tmp_path: Path
) -> None:
    ingest("digits")
    broken = _pipeline(tmp_path, student_width=16)  # the teacher's encoder cannot load into it
    with pytest.raises(ConfigError, match="model.init_from: the encoder of teacher-"):
        run_pipeline(load_pipeline(broken))
    (name,) = [path.name for path in pipelines_root().iterdir()]
    first = PipelineRecord.load(name)
    assert list(first.finished) == ["teacher"]
    teacher_run = first.runs["teacher"]
    checkpoints = sorted(p.name for p in (runs_root() / teacher_run).glob("checkpoint_*"))
    client = MlflowClient(first.tracking_uri)
    assert client.get_run(first.parent_run_id).info.status == "FAILED"

    record = run_pipeline(load_pipeline(_pipeline(tmp_path, student_width=8)), resume=name)

    assert record.runs["teacher"] == teacher_run and list(record.finished) == ["teacher", "student"]
    assert sorted(p.name for p in (runs_root() / teacher_run).glob("checkpoint_*")) == checkpoints
    parent = client.get_run(record.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["stage.student.run"] == record.runs["student"]
    assert "student/eval/classifier_acc" in parent.data.metrics
    assert "teacher/eval/classifier_acc" in parent.data.metrics
    experiment = client.get_experiment_by_name("pipelines")
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{record.parent_run_id}'"
    )
    by_stage = {run.data.tags["reprlab.pipeline.stage"]: run for run in children}
    assert sorted(by_stage) == ["student", "teacher"]  # the teacher ran once
    assert by_stage["teacher"].info.run_name == teacher_run
    assert by_stage["student"].data.tags["reprlab.pipeline.upstream"] == teacher_run
    assert by_stage["student"].data.params["model.teacher"] == teacher_run
    assert all(run.info.status == "FINISHED" for run in children)
