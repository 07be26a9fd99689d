"""The fit phase of a method fitted in closed form (the classical baselines): one pass over the
train split on the driver, without Ray Train or an optimiser. The result is saved as a checkpoint
where Ray Train would have written one, so evaluation and `reprlab eval` treat it as any run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pyarrow.fs as pafs
import torch

from reprlab.augment.ops import resized, to_float_nchw
from reprlab.methods import Method
from reprlab.storage import is_remote
from reprlab.train.build import make_training_module
from reprlab.train.checkpoint import TrainState, save_checkpoint
from reprlab.train.prepare import PreparedRun

CHECKPOINT_NAME = "checkpoint_closed_form"


def fit_in_closed_form(prepared: PreparedRun) -> Method:
    """Fit the job's method on its train split, log the fit's metrics (`fit/...`) into the
    active MLflow run, and keep the fitted module as the run's checkpoint."""
    job, dataset = prepared.job, prepared.dataset
    module = make_training_module(job, dataset.in_chans, dataset.num_classes)
    images, _ = dataset.read(job.data.train_split)
    pixels = resized(to_float_nchw(torch.from_numpy(images)), job.data.image_size)
    metrics = module.method.fit_closed_form(pixels, job.seed)
    mlflow.log_metrics({f"fit/{key}": value for key, value in metrics.items()})
    state = TrainState(epoch=job.optim.epochs)
    target = f"{prepared.checkpoints.rstrip('/')}/{CHECKPOINT_NAME}"
    if is_remote(target):
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(Path(folder), module, None, state)
            pafs.copy_files(folder, target)
    else:
        Path(target).mkdir(parents=True, exist_ok=True)
        save_checkpoint(Path(target), module, None, state)
    return module.method.eval()
