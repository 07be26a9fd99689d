"""DINO (Caron et al. 2021): self-distillation with no labels. The student matches, across
views, the output distribution of an EMA teacher that is centred (against collapse onto one
dimension) and sharpened by a low temperature (against collapse to the uniform distribution)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from reprlab.distributed import summed_over_workers
from reprlab.methods.base import Method, MethodArgs
from reprlab.methods.collapse import CollapseMonitor
from reprlab.methods.momentum import cosine_momentum, ema_update, momentum_copy


class NormalizedLinear(nn.Module):
    """Bias-free linear layer with unit-norm weight rows: DINO's weight-normalised last layer
    with its norm g frozen to 1 (`norm_last_layer`), without torch's weight_norm hooks."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """Linear(-BN)-GELU MLP to a bottleneck, L2 normalisation, then a NormalizedLinear to
    `out_dim` logits, initialised as the authors' code does (truncated normal, std 0.02, zero
    biases); `batch_norm` is their `use_bn_in_head`."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        bottleneck_dim: int,
        out_dim: int,
        num_layers: int,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            norm = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
            layers += [nn.Linear(dim, hidden_dim), *norm, nn.GELU()]
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        for layer in layers:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.mlp = nn.Sequential(*layers)
        self.last_layer = NormalizedLinear(bottleneck_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def global_mean(rows: torch.Tensor) -> torch.Tensor:
    """Mean of the rows [N, D] of every worker's `rows` (counts may differ): a batch-wide
    statistic that is the same on every worker and for any number of workers."""
    totals = torch.cat([rows.sum(0), rows.new_tensor([len(rows)])])
    totals = summed_over_workers(totals)
    return totals[:-1] / totals[-1]


def dino_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float
) -> torch.Tensor:
    """Mean over the pairs (teacher view t, student view s != t) of the batch mean of
    -sum_k P_t log softmax(S_s / student_temp). `student_logits` [S, B, K] starts with the
    T global views that `teacher_probs` [T, B, K] (centred, sharpened) describes."""
    log_probs = F.log_softmax(student_logits / student_temp, dim=-1)
    cross_entropy = -torch.einsum("tbk,sbk->tsb", teacher_probs, log_probs).mean(-1)
    teachers, students = cross_entropy.shape
    pairs = torch.arange(teachers)[:, None] != torch.arange(students)[None, :]
    return cross_entropy[pairs.to(cross_entropy.device)].mean()


@torch.no_grad()
def updated_center(
    center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float
) -> torch.Tensor:
    """C <- m C + (1 - m) mean of the teacher logits [N, K] over the global batch."""
    return center * momentum + global_mean(teacher_logits) * (1 - momentum)


def teacher_temperature(
    step: int, total_steps: int, warmup_temp: float, temp: float, warmup_fraction: float
) -> float:
    """Teacher temperature at optimiser step `step`: linear from `warmup_temp` at step 0 to
    `temp` after `warmup_fraction` of the run, then constant (the paper's warm-up over its
    first epochs, in steps because the method sees steps, not epochs)."""
    warmup_steps = warmup_fraction * total_steps
    if step >= warmup_steps:
        return temp
    return warmup_temp + (temp - warmup_temp) * step / warmup_steps


@torch.no_grad()
def teacher_entropies(teacher_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean entropy of each row's distribution, entropy of the mean distribution) of the
    teacher probabilities [N, K] over the global batch, in nats. Their difference, the
    information the output carries about the image, is ~0 in either collapse: one dimension
    dominating (both ~0) or a uniform output (both ~log K)."""
    per_row = -torch.special.xlogy(teacher_probs, teacher_probs).sum(-1, keepdim=True)
    means = global_mean(torch.cat([per_row, teacher_probs], dim=1))
    mean_probs = means[1:]
    return means[0], -torch.special.xlogy(mean_probs, mean_probs).sum()


class DINOArgs(MethodArgs):
    out_dim: int = Field(1024, gt=0, description="K logits (65536 in the paper; 1-4k here)")
    head_hidden_dim: int = Field(2048, gt=0)
    head_bottleneck_dim: int = Field(256, gt=0)
    head_layers: int = Field(3, ge=1, description="linear layers before the bottleneck's norm")
    head_bn: bool = Field(False, description="BatchNorm after the hidden linear layers")
    student_temp: float = Field(0.1, gt=0)
    teacher_temp: float = Field(0.04, gt=0, description="after the warm-up; 0.04-0.07")
    warmup_teacher_temp: float = Field(0.04, gt=0, description="teacher temperature at step 0")
    warmup_teacher_temp_fraction: float = Field(
        0.1, ge=0, le=1, description="part of the run the teacher temperature warms up over"
    )
    center_momentum: float = Field(0.9, ge=0, lt=1)
    base_momentum: float = Field(0.996, gt=0, lt=1, description="teacher EMA, cosine to 1")
    collapse_threshold: float = Field(
        0.05, ge=0, description="collapse at or below this teacher information (nats)"
    )
    collapse_patience: int = Field(100, ge=0, description="steps below it; 0: no check")
    collapse_grace_steps: int = Field(200, ge=0, description="first steps never checked")


class DINO(Method):
    """Student backbone + DINOHead, teacher an EMA copy of both. Each global view's teacher
    distribution is the target for the student's every other view: the other global view and,
    when the batch has `local_views` ([V, B, C, h, w] or a list of [B, C, h, w] small crops),
    every local crop, which the teacher never sees."""

    Args = DINOArgs

    def __init__(self, backbone: nn.Module, args: DINOArgs) -> None:
        super().__init__(backbone, args)
        self.head = DINOHead(
            backbone.num_features,
            args.head_hidden_dim,
            args.head_bottleneck_dim,
            args.out_dim,
            args.head_layers,
            args.head_bn,
        )
        self.teacher_backbone = momentum_copy(self.backbone)
        self.teacher_head = momentum_copy(self.head)
        self.momentum = args.base_momentum
        self.register_buffer("center", torch.zeros(args.out_dim))
        self.register_buffer("teacher_temp", torch.tensor(args.warmup_teacher_temp))
        self.monitor: CollapseMonitor | None = None
        if args.collapse_patience:
            self.monitor = CollapseMonitor(
                "dino",
                "teacher information H(mean p) - mean H(p)",
                args.collapse_threshold,
                args.collapse_patience,
                args.collapse_grace_steps,
                unit="nats",
                advice="its output no longer depends on the image: set head_bn (conv "
                "backbones) or lower the lr; if teacher_entropy is near log(out_dim) lower "
                "teacher_temp, else lower center_momentum",
            )

    def projection_head(self) -> nn.Module:
        return self.head

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        global_views = [batch["view1"], batch["view2"]]
        local_views = list(batch["local_views"]) if "local_views" in batch else []
        features = self.backbone(global_views[0])
        student = [self.head(features)]
        student += [self.head(self.backbone(view)) for view in global_views[1:] + local_views]
        with torch.no_grad():
            teacher_logits = torch.stack(
                [self.teacher_head(self.teacher_backbone(view)).float() for view in global_views]
            )
        teacher_probs = F.softmax((teacher_logits - self.center) / self.teacher_temp, dim=-1)
        loss = dino_loss(torch.stack(student).float(), teacher_probs, self.args.student_temp)
        entropy, mean_entropy = teacher_entropies(teacher_probs.flatten(0, 1))
        self.center.copy_(
            updated_center(self.center, teacher_logits.flatten(0, 1), self.args.center_momentum)
        )
        if self.monitor is not None:
            self.monitor.update(float(mean_entropy - entropy))
        return {
            "loss": loss,
            "teacher_entropy": entropy,
            "teacher_mean_entropy": mean_entropy,
            "teacher_temp": self.teacher_temp.clone(),
            "features": features.detach(),
        }

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.momentum = cosine_momentum(self.args.base_momentum, step, total_steps)
        ema_update(self.teacher_backbone, self.backbone, self.momentum)
        ema_update(self.teacher_head, self.head, self.momentum)
        args = self.args
        self.teacher_temp.fill_(
            teacher_temperature(
                step + 1,
                total_steps,
                args.warmup_teacher_temp,
                args.teacher_temp,
                args.warmup_teacher_temp_fraction,
            )
        )
