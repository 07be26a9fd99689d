"""Transfer across datasets: an encoder's input convolution matched to another channel count is
exactly the encoder fed the converted images, and the fine-tuning protocol's jobs."""

from __future__ import annotations

import pytest
import torch

from reprlab.config import ConfigError, validate_job
from reprlab.data.catalog import ingest
from reprlab.data.handle import DatasetHandle
from reprlab.models.backbones import build_backbone
from reprlab.runs import RunRecord, runs_root
from reprlab.train.init_from import matched_channels
from reprlab.train.transfer import FinetuneSettings, finetune_job, parse_labels_per_class


@pytest.mark.parametrize("backbone", ["conv4", "resnet18", "vit_mini"])
@pytest.mark.parametrize(("source", "target"), [(3, 1), (1, 3)])
def test_matched_channels_equal_feeding_the_converted_images(
    backbone: str, source: int, target: int
) -> None:
    """On the target's images, the matched encoder gives what the trained encoder gives on
    those images converted as few-shot evaluation converts them: grey repeated to RGB, RGB
    averaged to grey."""
    torch.manual_seed(0)
    trained = build_backbone(backbone, source, image_size=16).eval()
    adapted = build_backbone(backbone, target, image_size=16).eval()
    adapted.load_state_dict(matched_channels(trained.state_dict(), adapted))
    images = torch.rand(4, target, 16, 16, dtype=torch.float64)
    converted = images.repeat(1, 3, 1, 1) if target == 1 else images.mean(1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(adapted.double()(images), trained.double()(converted))


def test_weights_that_already_fit_are_returned_as_they_are() -> None:
    encoder = build_backbone("conv4", 1, width=8)
    weights = encoder.state_dict()
    matched = matched_channels(weights, encoder)
    assert all(matched[key] is tensor for key, tensor in weights.items())


def test_labels_per_class_are_counts_or_all_and_refused_in_one_line() -> None:
    assert parse_labels_per_class("1, 10,all,1") == ("1", "10", "all")
    for bad in ("", "0", "1,ten", "-1"):
        with pytest.raises(ConfigError, match=r"^--labels-per-class: positive integers"):
            parse_labels_per_class(bad)


def test_a_finetune_job_keeps_the_runs_encoder_and_takes_the_target_datasets_classes() -> None:
    ingest("digits")
    source = validate_job(
        {
            "model": {"width": 8, "global_bn": True},
            "data": {"dataset": "mnist5k", "image_size": 28},
            "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
        }
    )
    record = RunRecord("pre", runs_root() / "pre", source, 3, 10, "abc", "sqlite:///x.db")
    checkpoint = runs_root() / "pre" / "checkpoint_1"
    digits = DatasetHandle.open("digits")
    settings = FinetuneSettings(("4", "all"), freeze="stages:2", epochs=3, lr=0.05, seed=2)
    few = finetune_job(record, checkpoint, digits, "4", settings)
    every = finetune_job(record, checkpoint, digits, "all", settings)
    assert few.method == "finetune" and few.model.init_from == str(checkpoint)
    assert (few.model.backbone, few.model.width, few.model.global_bn) == ("conv4", 8, True)
    assert few.data.dataset == "digits" and few.data.image_size == 28
    assert few.data.labels_per_class == 4 and every.data.labels_per_class is None
    args = few.parsed_method_args()
    assert (args.num_classes, args.freeze) == (digits.num_classes, "stages:2")
    assert (few.optim.epochs, few.optim.lr, few.seed) == (3, 0.05, 2)
    assert few.scaling.num_workers == 2 and few.tracking.tracking_uri == "sqlite:///x.db"
    assert not (few.eval.linear_probe or few.eval.knn or few.eval.online_linear)
