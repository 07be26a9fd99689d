"""What a run takes from earlier runs, read on the driver and checked before Ray starts:
`model.init_from`, an encoder (run name or folder, checkpoint folder, MLflow run id, or an MLflow
model URI `runs:/...` / `models:/NAME@ALIAS`), and `model.teacher`, a classifier to learn from."""

from __future__ import annotations

import mlflow
import mlflow.pytorch
import torch
from mlflow.exceptions import MlflowException
from torch import nn

from reprlab.config import ConfigError, JobConfig
from reprlab.methods import Method, method_class
from reprlab.runs import find_trained
from reprlab.tracking.mlflow import tracking_uri
from reprlab.train.build import StartingPoint, load_trained_method, make_method

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


def matched_channels(
    weights: dict[str, torch.Tensor], encoder: nn.Module
) -> dict[str, torch.Tensor]:
    """`weights` whose input convolution reads as many channels as `encoder`'s: an RGB encoder
    given grey images sums its kernel over the channels (as if each grey image were repeated
    to RGB), a grey encoder given RGB images spreads its kernel over them (as if they were
    averaged to grey), the way few-shot evaluation feeds another dataset's images."""
    expected = encoder.state_dict()
    matched = dict(weights)
    for key, tensor in weights.items():
        target = expected.get(key)
        if target is None or tensor.ndim != 4 or tensor.shape == target.shape:
            continue
        given, wanted = tensor.shape[1], target.shape[1]
        if tensor.shape[:1] + tensor.shape[2:] != target.shape[:1] + target.shape[2:]:
            continue
        if wanted == 1:
            matched[key] = tensor.sum(dim=1, keepdim=True)
        elif given == 1:
            matched[key] = tensor.repeat(1, wanted, 1, 1) / wanted
    return matched


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
    """The weights the job's encoder starts from (None: a fresh initialisation), its input
    convolution matched to `in_chans` channels; ConfigError (one line naming model.init_from)
    when they cannot be found or do not fit the job's model.backbone."""
    source = job.model.init_from
    if source is None:
        return None
    try:
        weights = encoder_weights(source, tracking_uri(job.tracking.tracking_uri))
    except ValueError as error:
        raise ConfigError(f"model.init_from: {error}") from None
    encoder = make_method(job, in_chans).backbone
    weights = matched_channels(weights, encoder)
    problem = mismatch(weights, encoder)
    if problem:
        raise ConfigError(
            f"model.init_from: the encoder of {source} does not fit model.backbone "
            f"{job.model.backbone!r}: {problem}"
        )
    return weights


def teacher(job: JobConfig, in_chans: int, num_classes: int) -> Method | None:
    """The finished run `model.teacher` names, as its method in eval mode (None when the job
    names none); ConfigError (one line naming model.teacher) when a student names none, or the
    run cannot be found, does not classify, or was trained on other channels or classes."""
    source = job.model.teacher
    if source is None:
        if method_class(job.method).learns_from_teacher:
            raise ConfigError(
                f"model.teacher: method {job.method!r} learns from a teacher; name the finished "
                "run whose classifier it learns from (run name or folder, or MLflow run id)"
            )
        return None
    try:
        record, checkpoint = find_trained(source)
    except ValueError as error:
        raise ConfigError(f"model.teacher: {error}") from None
    trained = record.job.method
    if not method_class(trained).classifies:
        raise ConfigError(
            f"model.teacher: {source} trained {trained!r}, which gives no class predictions; "
            "a teacher must be a run of a method that classifies (supervised, finetune, ...)"
        )
    if (record.in_chans, record.num_classes) != (in_chans, num_classes):
        raise ConfigError(
            f"model.teacher: {source} was trained on {record.in_chans}-channel images of "
            f"{record.num_classes} classes; this job's data.dataset has {in_chans} and "
            f"{num_classes}"
        )
    return load_trained_method(record, checkpoint)


def starting_point(job: JobConfig, in_chans: int, num_classes: int) -> StartingPoint:
    """The encoder (`model.init_from`) and teacher (`model.teacher`) the job starts from."""
    return StartingPoint(initial_encoder(job, in_chans), teacher(job, in_chans, num_classes))
