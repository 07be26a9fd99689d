"""Pieces of the train loop that need no cluster: schedule, batch conversion, checkpoints,
methods and backbones built from a job."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from reprlab.augment.ops import float_images
from reprlab.config import JobConfig
from reprlab.models.backbones import build_backbone
from reprlab.train.build import make_method
from reprlab.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from reprlab.train.lars import LARS
from reprlab.train.optim import make_optimizer, warmup_cosine_lr


def test_warmup_then_cosine_to_zero() -> None:
    lrs = [warmup_cosine_lr(step, 100, 10, 1.0) for step in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_float_images_scales_only_uint8() -> None:
    batch = {"view1": torch.tensor([[0, 255]], dtype=torch.uint8), "label": torch.tensor([3])}
    out = float_images(batch)
    assert torch.equal(out["view1"], torch.tensor([[0.0, 1.0]]))
    assert torch.equal(out["label"], torch.tensor([3]))


@pytest.mark.parametrize(
    "name,kwargs,size,features",
    [("conv4", {"width": 32}, 28, 128), ("conv4", {}, 84, 256), ("resnet18", {}, 32, 512)],
)
def test_backbones_map_images_to_flat_features(name, kwargs, size, features) -> None:
    backbone = build_backbone(name, 3, **kwargs)
    out = backbone(torch.rand(2, 3, size, size))
    assert out.shape == (2, features) == (2, backbone.num_features)


def test_resnet_small_stem_keeps_resolution() -> None:
    backbone = build_backbone("resnet18", 3)
    assert backbone.conv1.stride == (1, 1) and backbone.conv1.kernel_size == (3, 3)
    assert isinstance(backbone.maxpool, torch.nn.Identity)


def test_conv4_weights_are_channels_last_and_compute_what_nchw_weights_do() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("conv4", 3, width=8).double()
    nchw = build_backbone("conv4", 3, width=8).double().to(memory_format=torch.contiguous_format)
    nchw.load_state_dict(backbone.state_dict())
    convolutions = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convolutions)
    assert all(m.weight.is_contiguous() for m in nchw.modules() if isinstance(m, torch.nn.Conv2d))
    images = torch.rand(4, 3, 28, 28, dtype=torch.float64)
    features, reference = backbone(images), nchw(images)
    features.sum().backward()
    reference.sum().backward()
    assert torch.allclose(features, reference)
    for own, other in zip(backbone.parameters(), nchw.parameters(), strict=True):
        assert torch.allclose(own.grad, other.grad)


def test_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'vgg'; allowed: conv4"):
        build_backbone("vgg", 3)


def test_checkpoint_round_trip_restores_weights_optimizer_and_position(tmp_path: Path) -> None:
    job = JobConfig.model_validate({"model": {"width": 8}})
    method = make_method(job, in_chans=1)
    optimizer = make_optimizer(job, method)
    batch = {"view1": torch.rand(4, 1, 28, 28), "view2": torch.rand(4, 1, 28, 28)}
    method(batch)["loss"].backward()
    optimizer.step()
    save_checkpoint(tmp_path, method, optimizer, TrainState(epoch=3, step=42))

    restored = make_method(job, in_chans=1)
    restored_optimizer = make_optimizer(job, restored)
    state = load_checkpoint(tmp_path, restored, restored_optimizer)
    assert state == TrainState(epoch=3, step=42)
    for a, b in zip(method.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert restored_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()
    with pytest.raises(FileNotFoundError, match="no reprlab checkpoint"):
        load_checkpoint(tmp_path / "empty", restored)
    old = tmp_path / "old"
    old.mkdir()
    torch.save({"method": {}, "optimizer": {}, "state": {}}, old / "state.pt")
    with pytest.raises(ValueError, match="older reprlab"):
        load_checkpoint(old, restored)


@pytest.mark.parametrize(
    "method,args",
    [
        ("simclr", {}),
        ("barlow_twins", {"proj_hidden_dim": 32, "proj_dim": 32}),
        ("vicreg", {"proj_hidden_dim": 32, "proj_dim": 32}),
        ("rotation", {}),
        ("supervised", {"num_classes": 3}),
    ],
)
def test_a_few_steps_lower_the_loss(method: str, args: dict) -> None:
    torch.manual_seed(0)
    job = JobConfig.model_validate(
        {"method": method, "method_args": args, "model": {"width": 8}, "optim": {"lr": 0.01}}
    )
    method = make_method(job, in_chans=1)
    optimizer = make_optimizer(job, method)
    images = torch.rand(16, 1, 28, 28)
    batch = {
        "view1": images,
        "view2": images + 0.05 * torch.rand_like(images),
        "label": torch.tensor([0, 1, 2, -1] * 4),
    }
    first = method(batch)["loss"].item()
    for _ in range(20):
        optimizer.zero_grad()
        method(batch)["loss"].backward()
        optimizer.step()
    assert method(batch)["loss"].item() < first
    assert method.embed(images).shape == (16, method.backbone.num_features)


def test_rotate_four_ways_labels_each_rotation() -> None:
    from reprlab.methods.rotation import rotate_four_ways

    image = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    rotated, labels = rotate_four_ways(image)
    assert labels.tolist() == [0, 1, 2, 3]
    assert rotated[0, 0].tolist() == [[0, 1], [2, 3]]
    assert rotated[1, 0].tolist() == [[1, 3], [0, 2]]  # 90 degrees counter-clockwise
    assert rotated[2, 0].tolist() == [[3, 2], [1, 0]]
    assert rotated[3, 0].tolist() == [[2, 0], [3, 1]]


def test_lars_step_scales_by_trust_ratio_and_skips_excluded_groups() -> None:
    """Two steps by hand: u = g + wd w; u *= eta ||w|| / ||u|| (LARS groups only); buffer =
    m buffer + u; w -= lr buffer."""
    weight = torch.tensor([[3.0, 4.0]], requires_grad=True)
    bias = torch.tensor([1.0], requires_grad=True)
    optimizer = LARS(
        [{"params": [weight]}, {"params": [bias], "lars": False, "weight_decay": 0.0}],
        lr=0.5,
        momentum=0.9,
        weight_decay=0.1,
        eta=0.02,
    )
    expected_w, expected_b = weight.detach().clone(), bias.detach().clone()
    buffer_w = buffer_b = None
    for grad_w, grad_b in ([[0.0, 1.0]], [2.0]), ([[1.0, 1.0]], [-1.0]):
        weight.grad, bias.grad = torch.tensor(grad_w), torch.tensor(grad_b)
        update = weight.grad + 0.1 * expected_w
        update = update * 0.02 * expected_w.norm() / (update.norm() + 1e-8)
        buffer_w = update if buffer_w is None else 0.9 * buffer_w + update
        buffer_b = bias.grad.clone() if buffer_b is None else 0.9 * buffer_b + bias.grad
        expected_w, expected_b = expected_w - 0.5 * buffer_w, expected_b - 0.5 * buffer_b
        optimizer.step()
        torch.testing.assert_close(weight.detach(), expected_w)
        torch.testing.assert_close(bias.detach(), expected_b)
