"""`model.init_from`: the encoder of an earlier run (run name or folder, checkpoint folder,
MLflow run id, or an MLflow model URI `runs:/...` / `models:/NAME@ALIAS`), read on the driver and
checked against the job's own encoder before Ray starts."""

from __future__ import annotations

import mlflow
import mlflow.pytorch
import torch
from mlflow.exceptions import MlflowException
from torch import nn

from reprlab.config import ConfigError, JobConfig
from reprlab.runs import find_trained
from reprlab.tracking.mlflow import tracking_uri
from reprlab.train.build import load_trained_method, make_method

MODEL_URI_SCHEMES = ("runs:/", "models:/")


def encoder_weights(source: str, uri: str) -> dict[str, torch.Tensor]:
    """The state dict of the encoder `source` names (an MLflow model URI is loaded from the
    tracking store at `uri`); ValueError (one line) when there is none."""
    if source.startswith(MODEL_URI_SCHEMES):
        mlflow.set_tracking_uri(uri)
        try:
            model = mlflow.pytorch.load_model(source, map_location="cpu")
        except (MlflowException, OSError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(f"{source}: no PyTorch model there ({first})") from None
        return model.state_dict()
    record, checkpoint = find_trained(source)
    return load_trained_method(record, checkpoint).backbone.state_dict()


def mismatch(weights: dict[str, torch.Tensor], encoder: nn.Module) -> str | None:
    """Why `weights` cannot load into `encoder` (the first missing, extra or differently shaped
    entry), or None when they fit."""
    expected = encoder.state_dict()
    for key in expected:
        if key not in weights:
            return f"it has no {key}, which this job's encoder needs"
    for key in weights:
        if key not in expected:
            return f"its {key} has no place in this job's encoder"
    for key, tensor in expected.items():
        if weights[key].shape != tensor.shape:
            return f"its {key} is {list(weights[key].shape)}, this job's is {list(tensor.shape)}"
    return None


def initial_encoder(job: JobConfig, in_chans: int) -> dict[str, torch.Tensor] | None:
    """The weights the job's encoder starts from (None: a fresh initialisation); ConfigError
    (one line naming model.init_from) when they cannot be found or do not fit the job's
    model.backbone for `in_chans` channels."""
    source = job.model.init_from
    if source is None:
        return None
    try:
        weights = encoder_weights(source, tracking_uri(job.tracking.tracking_uri))
    except ValueError as error:
        raise ConfigError(f"model.init_from: {error}") from None
    problem = mismatch(weights, make_method(job, in_chans).backbone)
    if problem:
        raise ConfigError(
            f"model.init_from: the encoder of {source} does not fit model.backbone "
            f"{job.model.backbone!r}: {problem}"
        )
    return weights
