"""The online linear classifier: trained on detached features only, labelled rows only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reprlab.eval.online import TrainingModule
from reprlab.methods import method_class
from reprlab.models.backbones import build_backbone


def _module(num_classes: int | None) -> TrainingModule:
    torch.manual_seed(0)
    cls = method_class("simclr")
    method = cls(build_backbone("conv4", 1, width=4), cls.Args(proj_hidden_dim=8, proj_dim=4))
    return TrainingModule(method, num_classes)


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    views = torch.rand(2, 6, 1, 12, 12, generator=generator)
    return {"view1": views[0], "view2": views[1], "label": torch.tensor([0, 1, 2, -1, 1, -1])}


def test_probe_gradient_never_reaches_the_encoder() -> None:
    with_probe, alone = _module(3), _module(None)
    with_probe(_batch())["objective"].backward()
    alone(_batch())["objective"].backward()
    for a, b in zip(with_probe.method.parameters(), alone.method.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    assert with_probe.head.weight.grad.abs().sum() > 0


def test_probe_loss_and_accuracy_count_labelled_rows_only() -> None:
    module = _module(3)
    batch = _batch()
    output = module(batch)
    features = module.method.backbone(batch["view1"]).detach()
    logits = module.head(features)
    labelled = batch["label"] >= 0
    expected = F.cross_entropy(logits[labelled], batch["label"][labelled])
    torch.testing.assert_close(output["online_linear_loss"], expected)
    correct = (logits.argmax(1)[labelled] == batch["label"][labelled]).float().mean()
    torch.testing.assert_close(output["online_linear_acc"], correct)
    torch.testing.assert_close(output["objective"], output["loss"] + expected)
