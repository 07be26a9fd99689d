"""Pipeline files: stages expanded in order with repetitions, `${stages.*}` references resolved
to earlier runs only, every stage's job checked up front, and one-line errors naming the file,
stage and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprlab.config import ConfigError
from reprlab.pipeline.spec import load_pipeline

SUPERVISED = """
name: teacher_job
method: supervised
data: {labels_per_class: 4}
model: {width: 8}
tracking: {experiment: from_first_job}
"""
STUDENT = """
name: student_job
method: noisy_student
data: {labels_per_class: 4}
model: {width: 8}
"""


def _files(tmp_path: Path, pipeline: str) -> Path:
    (tmp_path / "jobs").mkdir(parents=True)
    (tmp_path / "jobs" / "teacher.yaml").write_text(SUPERVISED)
    (tmp_path / "jobs" / "student.yaml").write_text(STUDENT)
    path = tmp_path / "pipelines" / "p.yaml"
    path.parent.mkdir()
    path.write_text(pipeline)
    return path


NOISY = """
name: noisy
stages:
  - {name: teacher, job: ../jobs/teacher.yaml}
  - name: student
    job: ../jobs/student.yaml
    repeat: 3
    overrides: {model.teacher: "${stages.previous}", method_args.dropout: 0.2}
  - name: last
    job: ../jobs/student.yaml
    overrides: {model.teacher: "${stages.student}", model.init_from: "${stages.teacher}"}
"""


def test_repetitions_follow_each_other_and_a_name_means_its_last_run(tmp_path: Path) -> None:
    pipeline = load_pipeline(_files(tmp_path, NOISY))
    keys = [stage.key for stage in pipeline.stages]
    assert keys == ["teacher", "student.1", "student.2", "student.3", "last"]
    runs = {key: f"run-of-{key}" for key in keys}
    jobs = [stage.job(runs) for stage in pipeline.stages]
    assert [job.model.teacher for job in jobs] == [
        None,
        "run-of-teacher",
        "run-of-student.1",
        "run-of-student.2",
        "run-of-student.3",
    ]
    assert jobs[4].model.init_from == "run-of-teacher"
    assert all(job.parsed_method_args().dropout == 0.2 for job in jobs[1:4])
    assert jobs[4].parsed_method_args().dropout == 0.5  # the job file's own value
    assert pipeline.stages[4].upstream(runs) == ["run-of-student.3", "run-of-teacher"]
    assert pipeline.experiment == "from_first_job"
    assert pipeline.stages[0].job_file == (tmp_path / "jobs" / "teacher.yaml").resolve()


def _error(tmp_path: Path, pipeline: str) -> str:
    with pytest.raises(ConfigError) as error:
        load_pipeline(_files(tmp_path, pipeline))
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        (
            '[{name: a, job: ../jobs/student.yaml, overrides: {model.teacher: "${stages.b}"}},'
            " {name: b, job: ../jobs/teacher.yaml}]",
            "stage a: overrides.model.teacher: ${stages.b} names no earlier stage; allowed: "
            "none (the first stage names none)",
        ),
        (
            "[{name: a, job: ../jobs/teacher.yaml},"
            ' {name: b, job: ../jobs/student.yaml, overrides: {model.teacher: "${stages.b}"}}]',
            "stage b: overrides.model.teacher: ${stages.b} names no earlier stage; allowed: "
            "${stages.a}, ${stages.previous}",
        ),
        (
            "[{name: a, job: ../jobs/student.yaml,"
            ' overrides: {model.teacher: "${stages.previous}"}}]',
            "stage a: overrides.model.teacher: ${stages.previous} names no earlier stage",
        ),
        (
            "[{name: a, job: ../jobs/teacher.yaml}, {name: a, job: ../jobs/teacher.yaml}]",
            "stages: the name 'a' is used twice",
        ),
        ("[{name: a, job: ../jobs/teacher.yaml, repeat: 0}]", "stages.0.repeat:"),
        ("[{name: 'a b', job: ../jobs/teacher.yaml}]", "stages.0.name:"),
        ("[{name: a, job: ../jobs/teacher.yaml, after: x}]", "stages.0.after:"),
        ("[]", "stages:"),
    ],
)
def test_bad_stages_fail_in_one_line_naming_the_stage_and_key(
    tmp_path: Path, stages: str, expected: str
) -> None:
    message = _error(tmp_path, f"name: p\nstages: {stages}\n")
    assert message.startswith(str(tmp_path / "pipelines" / "p.yaml")), message
    assert expected in message, message


def test_a_bad_stage_job_fails_before_anything_runs_naming_stage_and_job(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        "name: p\nstages:\n  - {name: a, job: ../jobs/teacher.yaml}\n"
        "  - {name: b, job: ../jobs/teacher.yaml, overrides: {optim.epochs: 0}}\n",
    )
    job_file = (tmp_path / "jobs" / "teacher.yaml").resolve()
    assert message.startswith(f"stage b ({job_file}): optim.epochs:"), message
    missing = _error(tmp_path / "x", "name: p\nstages: [{name: a, job: ../jobs/none.yaml}]\n")
    assert "none.yaml: no such job file" in missing
