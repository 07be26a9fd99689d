"""RotNet (Gidaris et al. 2018): predict which of 0/90/180/270 degrees an image was rotated by."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reprlab.methods.base import Method, MethodArgs


def rotate_four_ways(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every [B,C,H,W] image at 0, 90, 180 and 270 degrees ([4B,C,H,W]) and the rotation index
    of each (0..3)."""
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


class Rotation(Method):
    """Encoder plus a 4-way linear head on the rotated copies of `view1`."""

    Args = MethodArgs

    def __init__(self, backbone: nn.Module, args: MethodArgs) -> None:
        super().__init__(backbone, args)
        self.classifier = nn.Linear(backbone.num_features, 4)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, labels = rotate_four_ways(batch["view1"])
        features = self.backbone(images)
        logits = self.classifier(features).float()
        accuracy = (logits.argmax(1) == labels).float().mean()
        return {
            "loss": F.cross_entropy(logits, labels),
            "rotation_acc": accuracy.detach(),
            "features": features[: batch["view1"].shape[0]].detach(),
        }
