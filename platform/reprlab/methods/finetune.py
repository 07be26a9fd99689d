"""Fine-tuning an encoder (usually an earlier run's, `model.init_from`) with a new linear head
for the target's classes: linear evaluation (`freeze: all`), full fine-tuning (`none`) or
partial freezing (`stages:K`), partial re-initialisation, and layer-wise learning-rate decay."""

from __future__ import annotations

import re

from pydantic import Field
from torch import nn

from reprlab.methods.supervised import Supervised, SupervisedArgs
from reprlab.models.backbones import backbone_stages


class FinetuneArgs(SupervisedArgs):
    freeze: str = Field(
        "none",
        pattern=r"^(none|all|stages:\d+)$",
        description="none | all (linear evaluation) | stages:K (the first K encoder stages)",
    )
    reinit: str = Field(
        "head",
        pattern=r"^(head|last_stages:\d+)$",
        description="head (only the new head is fresh) | last_stages:K (and the last K stages)",
    )
    layer_decay: float = Field(
        1.0, gt=0, le=1, description="stage i of n learns at layer_decay^(n - i) of the rate"
    )


def stage_count(setting: str) -> int:
    """K of `stages:K` / `last_stages:K`; 0 for the settings without one."""
    match = re.search(r":(\d+)$", setting)
    return int(match.group(1)) if match else 0


class Finetune(Supervised):
    """The supervised objective on a given encoder: its first stages (or all of it) frozen, in
    eval mode so their BatchNorm statistics stay as trained, and without gradients; its last
    stages optionally re-initialised; a learning rate that shrinks stage by stage towards the
    input. A frozen encoder with a fresh head is linear evaluation."""

    Args = FinetuneArgs

    def __init__(self, backbone: nn.Module, args: FinetuneArgs) -> None:
        super().__init__(backbone, args)
        needs_stages = (
            args.freeze.startswith("stages") or args.reinit != "head" or args.layer_decay < 1
        )
        self.stages = backbone_stages(backbone) if needs_stages else [backbone]
        count = len(self.stages)
        frozen, fresh = stage_count(args.freeze), stage_count(args.reinit)
        if frozen > count or fresh > count:
            raise ValueError(
                f"method_args: the encoder has {count} stages; freeze {args.freeze!r} and "
                f"reinit {args.reinit!r} must name at most that many"
            )
        for stage in self.stages[count - fresh :] if fresh else []:
            for module in stage.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        self.frozen: list[nn.Module] = [backbone] if args.freeze == "all" else self.stages[:frozen]
        for stage in self.frozen:
            stage.requires_grad_(False)

    def train(self, mode: bool = True) -> Finetune:
        """Set the trained parts' mode; frozen stages stay in eval mode."""
        super().train(mode)
        for stage in self.frozen:
            stage.eval()
        return self

    def lr_scales(self) -> dict[int, float]:
        """Stage i of n (0 nearest the input) at layer_decay^(n - i); the head at 1."""
        decay, count = self.args.layer_decay, len(self.stages)
        return {
            id(parameter): decay ** (count - index)
            for index, stage in enumerate(self.stages)
            for parameter in stage.parameters()
        }
