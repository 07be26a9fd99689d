"""Build a job's modules: the method around a fresh backbone, the trainable module with its
online classifier, and a finished run's method from its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from reprlab.config import JobConfig
from reprlab.eval.online import TrainingModule
from reprlab.methods import Method, method_class
from reprlab.models.backbones import build_backbone
from reprlab.runs import RunRecord
from reprlab.train.checkpoint import load_checkpoint


@dataclass(frozen=True)
class StartingPoint:
    """What a run starts from besides fresh weights, read from earlier runs on the driver: the
    encoder `model.init_from` names, the frozen classifier `model.teacher` names."""

    encoder: dict[str, torch.Tensor] | None = None
    teacher: Method | None = None


def make_method(job: JobConfig, in_chans: int, start: StartingPoint | None = None) -> Method:
    """The job's method around a freshly initialised backbone, or one holding `start`'s encoder
    before the method is built around it (so a method may freeze or re-initialise parts of what
    it was given), and handed `start`'s teacher."""
    backbone_args = {"width": job.model.width} if job.model.width else {}
    backbone = build_backbone(
        job.model.backbone,
        in_chans,
        image_size=job.data.image_size,
        patch_size=job.model.patch_size,
        **backbone_args,
    )
    start = start or StartingPoint()
    if start.encoder is not None:
        backbone.load_state_dict(start.encoder)
    method = method_class(job.method)(backbone, job.parsed_method_args())
    if start.teacher is not None:
        method.take_teacher(start.teacher)
    return method


def make_training_module(
    job: JobConfig,
    in_chans: int,
    num_classes: int,
    probe_keys: tuple[str, str] | None = ("view1", "label"),
    start: StartingPoint | None = None,
) -> TrainingModule:
    """The job's method (from `start` when given) plus its online linear classifier when
    `eval.online_linear` is on (on the batch keys `probe_keys` = (images, labels) its batch
    source names)."""
    head_classes = num_classes if job.eval.online_linear and probe_keys else None
    method = make_method(job, in_chans, start)
    return TrainingModule(method, head_classes, probe_keys)


def load_trained_method(record: RunRecord, checkpoint: Path) -> Method:
    """A finished run's method with the weights of `checkpoint`, on CPU, in eval mode."""
    module = make_training_module(record.job, record.in_chans, record.num_classes)
    load_checkpoint(checkpoint, module)
    return module.method.eval()
