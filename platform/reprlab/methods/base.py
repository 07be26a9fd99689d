"""The method contract: one nn.Module per objective that owns its networks and its loss."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from reprlab.models.heads import mlp_head


class MethodArgs(BaseModel):
    """A method's own `method_args`; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Method(nn.Module):
    """An objective the generic train loop can run without knowing which one it is.

    forward(batch) is the training step, so DDP's wrapper sees it; `on_step_end` is the hook for
    momentum/EMA updates and schedules; `embed` gives frozen features for evaluation."""

    Args: ClassVar[type[MethodArgs]] = MethodArgs
    backbones: ClassVar[tuple[str, ...] | None] = None
    """Backbone names the method can use; None means any."""
    uses_mixed_labels: ClassVar[bool] = False
    """Whether training_step reads `label_mix`/`mix_weight` (a mixer in the view policy)."""
    batch_source: ClassVar[str] = "two_views"
    """The batch source (train/sources/) the method trains on: "two_views", "episodes",
    "labelled_unlabelled" or "m_per_class"."""
    classifies: ClassVar[bool] = False
    """Whether `classify` gives class logits (a method trained with labels): its held-out
    accuracy is then reported after every epoch and at the end."""
    learns_from_teacher: ClassVar[bool] = False
    """Whether it trains against a frozen classifier from an earlier run (`model.teacher`),
    handed over by `take_teacher` before training."""
    fits_in_closed_form: ClassVar[bool] = False
    """Whether a run fits it on the driver in one pass over the train split (`fit_closed_form`)
    instead of training it with Ray Train and an optimiser: the classical baselines."""
    ddp: ClassVar[bool] = True
    """Whether DDP may wrap it. Inner-loop learners (MAML) take `torch.autograd.grad` inside
    forward, which DDP's reducer does not support: the loop all-reduces their gradients."""

    def __init__(self, backbone: nn.Module, args: MethodArgs) -> None:
        super().__init__()
        self.backbone = backbone
        self.args = args

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.training_step(batch)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return dict(loss=scalar tensor, **scalar metrics) for one batch."""
        raise NotImplementedError

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called after every optimiser step (global step count, total planned steps)."""

    def take_teacher(self, teacher: Method) -> None:
        """Keep `teacher`, a finished run's method that classifies, to learn from."""
        raise NotImplementedError(f"{type(self).__name__} learns from no teacher")

    def fit_closed_form(self, images: torch.Tensor, seed: int) -> dict[str, float]:
        """Fit on the float [N, C, S, S] train images in [0, 1]; returns metrics of the fit."""
        raise NotImplementedError(f"{type(self).__name__} is trained, not fitted in closed form")

    def pictures(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pictures of what the finished method learnt, given a few float [B, C, S, S]
        held-out images: artifact path -> float [K, C, h, w] images for a grid in the run
        (eigen-digits, centroids, reconstructions); none by default."""
        return {}

    def lr_scales(self) -> dict[int, float]:
        """Learning-rate multipliers by parameter id (layer-wise decay); others train at 1."""
        return {}

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen representation of float [B,C,H,W] images in [0, 1]."""
        return self.backbone(images)

    def projection_head(self) -> nn.Module | None:
        """The head whose output, on the backbone's features, is the embedding the loss
        compares (a two-view projector, a metric loss's embedding layer); None when the loss
        reads no such space. Retrieval and clustering are scored there too."""
        return None

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits [B, classes] of float [B,C,H,W] images in [0, 1] (methods that
        classify: the weights they are evaluated with)."""
        raise NotImplementedError(f"{type(self).__name__} does not classify")


class ProjectionArgs(MethodArgs):
    """Shape of the MLP projector of a two-view method (subclasses set their paper's defaults)."""

    proj_hidden_dim: int = Field(2048, gt=0)
    proj_dim: int = Field(2048, gt=0)
    proj_layers: int = Field(3, ge=1)
    proj_last_bn: bool = Field(False, description="parameter-free BatchNorm on the projection")


class TwoViewMethod(Method):
    """An objective on the projections of the two views: backbone then an MLP projector."""

    Args: ClassVar[type[MethodArgs]] = ProjectionArgs

    def __init__(self, backbone: nn.Module, args: ProjectionArgs) -> None:
        super().__init__(backbone, args)
        self.projector = mlp_head(
            backbone.num_features,
            args.proj_hidden_dim,
            args.proj_dim,
            args.proj_layers,
            last_bn=args.proj_last_bn,
        )

    def projection_head(self) -> nn.Module:
        return self.projector

    def project_views(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(detached features of `view1`, for the online probe; float32 projections z1, z2 of
        `view1` and `view2`, for a loss computed in fp32)."""
        h1 = self.backbone(batch["view1"])
        z1 = self.projector(h1)
        z2 = self.projector(self.backbone(batch["view2"]))
        return h1.detach(), z1.float(), z2.float()


class EpisodicMethod(Method):
    """A meta-learner trained on episodes. A batch holds T tasks of one worker:
    `support` [T, N*K, C, H, W] and `query` [T, N*Q, C, H, W] float images in [0, 1],
    `support_label` [T, N*K] and `query_label` [T, N*Q] int64 in 0..N-1.

    training_step returns `loss` (mean query loss over the T tasks) and `query_acc`."""

    batch_source = "episodes"

    def episode_accuracy(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Query accuracy of each of the T episodes ([T] float), adapting to the support set
        the way the method does at test time."""
        raise NotImplementedError
