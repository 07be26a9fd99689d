"""ANIL (Raghu et al. 2020, "Rapid learning or feature reuse?"): MAML whose inner loop adapts
only the linear head on top of features the body computes once per task."""

from __future__ import annotations

import torch
from torch.func import functional_call

from reprlab.methods.maml import MAML, weights_within


class ANIL(MAML):
    """MAML with a head-only inner loop: the body embeds the support and query sets once per
    task (cheap inner steps) and the meta-gradient still reaches it through those features,
    to second order through the head's inner loop unless `first_order`."""

    def inner_parameters(self) -> dict[str, torch.Tensor]:
        """The head's trainable parameters, named as in `self`."""
        return {f"head.{name}": p for name, p in self.head.named_parameters() if p.requires_grad}

    def task_features(self, images: torch.Tensor) -> torch.Tensor:
        """The body's features (batch statistics of this set, as in MAML)."""
        return self.backbone(images)

    def task_logits(self, inputs: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Head logits of body features with the head's weights from `weights`."""
        return functional_call(self.head, weights_within(weights, "head"), (inputs,))
