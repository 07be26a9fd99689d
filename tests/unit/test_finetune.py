"""Starting from an earlier run's encoder (`model.init_from`) and fine-tuning it: the exact
weights loaded, one-line refusals, freezing, partial re-initialisation, layer-wise decay; and
the encoders' stages, WRN-28-2's with its shape, size and initialisation."""

from __future__ import annotations

import mlflow
import pytest
import torch

from reprlab.config import ConfigError, validate_job
from reprlab.models.backbones import backbone_stages, build_backbone
from reprlab.runs import RunRecord, runs_root
from reprlab.tracking.mlflow import log_encoder, tracking_uri
from reprlab.train.build import StartingPoint, make_method, make_training_module
from reprlab.train.checkpoint import TrainState, save_checkpoint
from reprlab.train.init_from import initial_encoder
from reprlab.train.optim import make_optimizer, set_lr


def _saved_run(name: str, width: int = 8) -> torch.nn.Module:
    """A finished simclr run `name` with one checkpoint; its encoder."""
    job = validate_job({"model": {"width": width}})
    storage = runs_root() / name
    RunRecord(name, storage, job, 1, 10, "abc", "sqlite:///x.db").save()
    torch.manual_seed(7)
    module = make_training_module(job, 1, 10)
    (storage / "checkpoint_1").mkdir()
    save_checkpoint(storage / "checkpoint_1", module, make_optimizer(job, module), TrainState(1, 1))
    return module.method.backbone


def _finetune_job(**method_args) -> dict:
    return {
        "method": "finetune",
        "method_args": method_args,
        "model": {"width": 8, "init_from": "pretrained"},
        "data": {"augment": {"policy": "weak", "hflip_p": 0}},
    }


def test_init_from_a_run_name_loads_exactly_its_encoder() -> None:
    saved = _saved_run("pretrained")
    job = validate_job(_finetune_job())
    method = make_method(job, 1, StartingPoint(encoder=initial_encoder(job, 1)))
    for (name, ours), theirs in zip(
        method.backbone.state_dict().items(), saved.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs), name
    fresh = make_method(job, 1)
    assert not torch.equal(
        fresh.backbone.state_dict()["features.0.weight"], saved.features[0].weight
    )


def test_init_from_an_mlflow_model_uri_loads_the_logged_encoder(tmp_path) -> None:
    saved = _saved_run("pretrained")
    mlflow.set_tracking_uri(tracking_uri())
    with mlflow.start_run() as run:
        log_encoder(saved, [28, 28, 1], 28)
    job = validate_job(
        _finetune_job() | {"model": {"width": 8, "init_from": f"runs:/{run.info.run_id}/encoder"}}
    )
    weights = initial_encoder(job, 1)
    for name, tensor in saved.state_dict().items():
        assert torch.equal(weights[name], tensor), name
    mlflow.set_tracking_uri(None)


def test_an_encoder_that_does_not_fit_is_refused_in_one_line_naming_the_entry() -> None:
    _saved_run("pretrained", width=16)
    job = validate_job(_finetune_job())
    with pytest.raises(ConfigError) as error:
        initial_encoder(job, 1)
    assert str(error.value) == (
        "model.init_from: the encoder of pretrained does not fit model.backbone 'conv4': its "
        "features.0.weight is [16, 1, 3, 3], this job's is [8, 1, 3, 3]"
    )
    job = validate_job(_finetune_job() | {"model": {"width": 8, "init_from": "nowhere"}})
    with pytest.raises(ConfigError, match=r"^model.init_from: nowhere: not a checkpoint folder"):
        initial_encoder(job, 1)


def _steps(method: torch.nn.Module, job, count: int = 3) -> None:
    optimizer = make_optimizer(job, method)
    torch.manual_seed(0)
    batch = {"view1": torch.rand(8, 1, 12, 12), "label": torch.randint(0, 10, (8,))}
    method.train()
    for _ in range(count):
        optimizer.zero_grad()
        method(batch)["loss"].backward()
        optimizer.step()


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


def test_freeze_all_is_linear_evaluation_weights_statistics_and_gradients_untouched() -> None:
    job = validate_job(_finetune_job(freeze="all") | {"model": {"width": 8}})
    method = make_method(job, 1)
    before, head = _state(method.backbone), _state(method.classifier)
    _steps(method, job)
    for name, tensor in method.backbone.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # running statistics included
    assert all(p.grad is None for p in method.backbone.parameters())
    assert not torch.equal(method.classifier.weight, head["weight"])


def test_freeze_stages_keeps_the_first_k_and_trains_the_rest() -> None:
    job = validate_job(_finetune_job(freeze="stages:2") | {"model": {"width": 8}})
    method = make_method(job, 1)
    stages = backbone_stages(method.backbone)
    before = [_state(stage) for stage in stages]
    _steps(method, job)
    for index, stage in enumerate(stages):
        same = all(torch.equal(t, before[index][n]) for n, t in stage.state_dict().items())
        assert same == (index < 2), index
        assert all((p.grad is None) == (index < 2) for p in stage.parameters())


def test_reinit_last_stages_keeps_the_given_weights_elsewhere() -> None:
    saved = _saved_run("pretrained")
    job = validate_job(_finetune_job(reinit="last_stages:1"))
    method = make_method(job, 1, StartingPoint(encoder=initial_encoder(job, 1)))
    ours, theirs = backbone_stages(method.backbone), backbone_stages(saved)
    for index in range(4):
        weight_ours, weight_theirs = ours[index][0].weight, theirs[index][0].weight
        assert torch.equal(weight_ours, weight_theirs) == (index < 3), index


def test_layer_decay_scales_each_stage_and_leaves_the_head_at_one() -> None:
    job = validate_job(_finetune_job(layer_decay=0.5) | {"model": {"width": 8}})
    method = make_method(job, 1)
    optimizer = make_optimizer(job, method)
    set_lr(optimizer, 0.1)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    for index, stage in enumerate(backbone_stages(method.backbone)):
        for parameter in stage.parameters():
            assert lr_of[id(parameter)] == pytest.approx(0.1 * 0.5 ** (4 - index))
    assert lr_of[id(method.classifier.weight)] == pytest.approx(0.1)


def test_naming_more_stages_than_the_encoder_has_fails() -> None:
    job = validate_job(_finetune_job(freeze="stages:5") | {"model": {"width": 8}})
    with pytest.raises(ValueError, match="the encoder has 4 stages"):
        make_method(job, 1)
    with pytest.raises(ConfigError, match="method_args.freeze"):
        validate_job(_finetune_job(freeze="some"))


# WRN-28-2's encoder: stem 3*16*9 = 432, groups 70,112 + 279,488 + 1,116,032 (convs, BNs and
# the three 1x1 shortcuts), final BN 256; with a 10-class fc (128*10 + 10) it is the 1.47M
# parameters of FixMatch's WRN-28-2.
WRN28_2_ENCODER_PARAMETERS = 1_466_320


@pytest.mark.parametrize("in_chans", [1, 3])
def test_wrn28_2_pools_32x32_images_to_128_features(in_chans: int) -> None:
    backbone = build_backbone("wrn28_2", in_chans)
    out = backbone(torch.rand(2, in_chans, 32, 32))
    assert out.shape == (2, 128) == (2, backbone.num_features)
    count = sum(p.numel() for p in backbone.parameters())
    assert count == WRN28_2_ENCODER_PARAMETERS - (3 - in_chans) * 16 * 9
    assert 1.465e6 < count + 128 * 10 + 10 < 1.475e6


def test_wrn28_2_stages_run_in_order_and_hold_every_weight_once() -> None:
    backbone = build_backbone("wrn28_2", 3).eval()
    stages = backbone_stages(backbone)
    assert len(stages) == 5  # stem conv, three groups, final BN + LeakyReLU
    for kind in ("parameters", "buffers"):
        ids = [id(t) for stage in stages for t in getattr(stage, kind)()]
        assert len(ids) == len(set(ids)), kind
        assert set(ids) == {id(t) for t in getattr(backbone, kind)()}, kind
    x = torch.rand(2, 3, 32, 32)
    hidden = x
    for stage in stages:
        hidden = stage(hidden)
    assert torch.allclose(backbone.pool(hidden), backbone(x))


def test_wrn28_2_is_initialised_and_normalised_as_fixmatch_s() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("wrn28_2", 3)
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 25  # two per block, and the final one
    for norm in norms:
        assert norm.momentum == 0.001
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
    slopes = {m.negative_slope for m in backbone.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.1}
    conv = backbone_stages(backbone)[3][0].conv1  # 64 -> 128, 3x3: fan_in 576, fan_out 1,152
    assert conv.weight.std().item() == pytest.approx((2 / (128 * 9)) ** 0.5, rel=0.02)


def test_freeze_stages_on_wrn28_2_trains_only_the_later_ones() -> None:
    job = validate_job(_finetune_job(freeze="stages:4") | {"model": {"backbone": "wrn28_2"}})
    method = make_method(job, 1)
    stages = backbone_stages(method.backbone)
    before = [_state(stage) for stage in stages]
    _steps(method, job, count=2)
    for index, stage in enumerate(stages):
        same = all(torch.equal(t, before[index][n]) for n, t in stage.state_dict().items())
        assert same == (index < 4), index
