"""The untrained representations every benchmark table compares against."""

from __future__ import annotations

import torch

from reprlab.config import JobConfig
from reprlab.methods import Method, MethodArgs
from reprlab.models.backbones import build_backbone
from reprlab.train.build import make_method


def architecture(job: JobConfig) -> str:
    """A short name of the job's encoder (`conv4 w32`)."""
    width = f" w{job.model.width}" if job.model.width else ""
    return f"{job.model.backbone}{width}"


def untrained_encoders(job: JobConfig, in_chans: int) -> dict[str, Method]:
    """Raw pixels and the job's encoder before any training (initialised under the job's seed),
    by their table names."""
    pixels_encoder = build_backbone("pixels", in_chans, image_size=job.data.image_size)
    pixels = Method(pixels_encoder, MethodArgs())
    torch.manual_seed(job.seed)
    return {"raw pixels": pixels, f"random-init {architecture(job)}": make_method(job, in_chans)}
