"""A collapsing self-distillation run stops at once and ends FAILED saying why in one line,
instead of finishing with a useless encoder."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from reprlab.config import validate_job
from reprlab.data.catalog import ingest
from reprlab.methods.collapse import RepresentationCollapse
from reprlab.runs import runs_root
from reprlab.tracking.mlflow import FAILURE_TAG, tracking_uri
from reprlab.train.prepare import prepare
from reprlab.train.run import run_prepared

pytestmark = pytest.mark.integration


def test_a_dino_run_whose_teacher_is_uniform_fails_with_one_line(ray_cluster) -> None:
    ingest("digits")
    job = validate_job(
        {
            "name": "dino_collapse",
            "method": "dino",
            "method_args": {
                "head_hidden_dim": 64,
                "out_dim": 128,
                # a teacher this hot is uniform for every image: its output carries no information
                "teacher_temp": 1.0,
                "warmup_teacher_temp": 1.0,
                "collapse_grace_steps": 0,
                "collapse_patience": 5,
            },
            "data": {"dataset": "digits", "image_size": 8, "batch_size": 32},
            "model": {"backbone": "conv4", "width": 16},
            "optim": {"epochs": 2, "warmup_epochs": 0},
            "scaling": {"num_workers": 2},
            "eval": {"linear_probe": False, "knn": False, "online_linear": False},
            "tracking": {"experiment": "collapse", "augment_grid_pairs": 0},
        }
    )
    with pytest.raises(RepresentationCollapse) as raised:
        run_prepared(prepare(job))
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("dino collapsed: teacher information")
    assert "for 5 steps" in message

    client = MlflowClient(tracking_uri())
    (run,) = client.search_runs(
        [client.get_experiment_by_name("collapse").experiment_id], max_results=1
    )
    assert run.info.status == "FAILED"
    assert run.data.tags[FAILURE_TAG].startswith("RepresentationCollapse: dino collapsed")
    assert (runs_root() / run.info.run_name).is_dir()
