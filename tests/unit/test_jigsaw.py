"""Jigsaw: the permutation sets, tiling and shuffling checked by hand on small images, the
training step on a tiny conv4, and the argument and backbone checks."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from reprlab.config import ConfigError, load_job
from reprlab.methods import METHODS
from reprlab.methods.jigsaw import (
    Jigsaw,
    JigsawArgs,
    cut_tiles,
    maximal_hamming_permutations,
    pairwise_hamming,
    random_offsets,
    shuffle_tiles,
)
from reprlab.models.backbones import build_backbone

from .learning import loss_before_and_after

JOBS = Path(__file__).parents[2] / "jobs"


def small_jigsaw(in_chans: int = 1, **args) -> Jigsaw:
    backbone = build_backbone("conv4", in_chans, width=8)
    return Jigsaw(backbone, JigsawArgs(**({"head_hidden_dim": 32} | args)))


def minimum_distance(permutations: torch.Tensor) -> int:
    distances = pairwise_hamming(permutations, permutations)
    return int(distances.fill_diagonal_(permutations.shape[1] + 1).min())


def quadrants(image: torch.Tensor) -> list[torch.Tensor]:
    """The four 4x4 quadrants of an [..., 8, 8] image, row-major."""
    return [image[..., r : r + 4, c : c + 4] for r in (0, 4) for c in (0, 4)]


def test_grid2_uses_all_24_orderings_of_4_tiles() -> None:
    permutations = small_jigsaw(grid=2).permutations
    assert permutations.shape == (24, 4)
    assert {tuple(p) for p in permutations.tolist()} == set(itertools.permutations(range(4)))


def test_grid3_set_is_deterministic_distinct_and_far_apart() -> None:
    chosen = maximal_hamming_permutations(100)
    assert chosen.shape == (100, 9)
    assert torch.equal(chosen, maximal_hamming_permutations(100))
    assert torch.equal(small_jigsaw(grid=3).permutations, chosen)
    assert torch.equal(chosen.sort(dim=1).values, torch.arange(9).expand(100, 9))
    generator = torch.Generator().manual_seed(1)
    random_set = torch.rand(100, 9, generator=generator).argsort(dim=1)
    greedy, random = minimum_distance(chosen), minimum_distance(random_set)
    assert greedy >= 6 > random, f"minimum Hamming distance {greedy} (random set: {random})"


def test_grid3_set_has_the_requested_size() -> None:
    model = small_jigsaw(grid=3, num_permutations=30)
    assert model.permutations.shape == (30, 9)
    assert model.classifier[-1].out_features == 30
    assert minimum_distance(model.permutations) >= 7


def test_tiles_without_gap_are_the_quadrants_in_the_asked_order() -> None:
    image = torch.arange(64.0).view(1, 1, 8, 8)
    tiles = cut_tiles(image, grid=2, gap=0, offsets=torch.zeros(1, 4, 2, dtype=torch.long))
    assert tiles.shape == (1, 4, 1, 4, 4)
    for k, quadrant in enumerate(quadrants(image[0])):
        assert torch.equal(tiles[0, k], quadrant)
    order = torch.tensor([[2, 0, 3, 1]])
    shuffled = shuffle_tiles(tiles, order)
    for position, tile in enumerate([2, 0, 3, 1]):
        assert torch.equal(shuffled[0, position], quadrants(image[0])[tile])


def test_tiles_with_a_gap_are_smaller_and_sit_at_their_offset() -> None:
    images = torch.arange(2 * 3 * 64.0).view(2, 3, 8, 8)
    offsets = torch.tensor([[[0, 0], [1, 0], [0, 1], [1, 1]], [[1, 1], [0, 0], [1, 0], [0, 1]]])
    tiles = cut_tiles(images, grid=2, gap=1, offsets=offsets)
    assert tiles.shape == (2, 4, 3, 3, 3)
    for b in range(2):
        for k in range(4):
            top, left = 4 * (k // 2) + offsets[b, k, 0], 4 * (k % 2) + offsets[b, k, 1]
            assert torch.equal(tiles[b, k], images[b, :, top : top + 3, left : left + 3])


def test_cells_drop_the_rows_past_the_last_one() -> None:
    image = torch.arange(100.0).view(1, 1, 10, 10)
    tiles = cut_tiles(image, grid=3, gap=0, offsets=torch.zeros(1, 9, 2, dtype=torch.long))
    assert tiles.shape == (1, 9, 1, 3, 3)
    assert torch.equal(tiles[0, 8, 0], image[0, 0, 6:9, 6:9])


def test_random_offsets_stay_inside_the_cell() -> None:
    torch.manual_seed(0)
    offsets = random_offsets(64, grid=3, gap=2, device=torch.device("cpu"))
    assert offsets.shape == (64, 9, 2)
    assert set(offsets.unique().tolist()) == {0, 1, 2}


def test_a_gap_as_large_as_the_cell_is_an_error() -> None:
    with pytest.raises(ValueError, match="jigsaw: gap 4 leaves no tile of a 4x4 px cell"):
        cut_tiles(torch.rand(1, 1, 8, 8), 2, 4, torch.zeros(1, 4, 2, dtype=torch.long))


def test_each_puzzle_is_its_image_shuffled_by_its_label() -> None:
    torch.manual_seed(0)
    model = small_jigsaw(grid=2, gap=0)
    images = torch.rand(16, 1, 8, 8)
    tiles, labels = model.puzzles(images)
    assert tiles.shape == (16, 4, 1, 4, 4) and labels.shape == (16,)
    assert len(labels.unique()) > 1
    for b in range(16):
        pieces = quadrants(images[b])
        for position, tile in enumerate(model.permutations[labels[b]].tolist()):
            assert torch.equal(tiles[b, position], pieces[tile])


def test_upsampling_grid3_tiles_of_digits() -> None:
    torch.manual_seed(0)
    model = small_jigsaw(grid=3, upsample=63, gap=3, num_permutations=10)
    tiles, labels = model.puzzles(torch.rand(2, 1, 28, 28))
    assert tiles.shape == (2, 9, 1, 18, 18)
    assert labels.max() < 10


@pytest.mark.parametrize(
    "args", [{"grid": 2}, {"grid": 3, "upsample": 36, "normalize_tiles": True, "gap": 3}]
)
def test_training_step_gives_a_finite_loss_and_whole_image_features(args: dict) -> None:
    torch.manual_seed(0)
    model = small_jigsaw(in_chans=3, **args)
    images = torch.rand(6, 3, 28, 28)
    output = model.training_step({"view1": images, "view2": torch.rand(6, 3, 28, 28)})
    assert set(output) == {"loss", "jigsaw_acc", "features"}
    assert torch.isfinite(output["loss"]) and output["loss"].requires_grad
    assert 0.0 <= output["jigsaw_acc"].item() <= 1.0
    assert output["features"].shape == (6, model.backbone.num_features)
    assert not output["features"].requires_grad
    torch.testing.assert_close(output["features"], model.backbone(images))


def test_a_few_optimiser_steps_lower_the_loss() -> None:
    """On noisy ramps, whose brightness tells where a tile came from, the puzzle is learnable."""
    torch.manual_seed(0)
    model = small_jigsaw(grid=2)
    ramp = torch.linspace(0, 1, 16)
    images = (ramp.view(16, 1) + 2 * ramp.view(1, 16)) / 3 + 0.1 * torch.rand(16, 1, 16, 16)
    before, after = loss_before_and_after(model, images, lr=3e-3)
    assert after < 0.8 * before


def test_args_are_checked() -> None:
    assert JigsawArgs().permutation_count == 24
    assert JigsawArgs(grid=3).permutation_count == 100
    with pytest.raises(ValidationError, match="grid 2 uses all 24 orderings, got 100"):
        JigsawArgs(grid=2, num_permutations=100)
    with pytest.raises(ValidationError, match="grid"):
        JigsawArgs(grid=4)
    with pytest.raises(ValidationError, match="gap"):
        JigsawArgs(gap=-1)


def test_job_rejects_jigsaw_on_a_vit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "jigsaw", Jigsaw)
    overrides = ["method=jigsaw", "model.backbone=vit_mini", "model.width=null"]
    with pytest.raises(ConfigError, match=r"model.backbone: method 'jigsaw' needs one of 'conv4'"):
        load_job(JOBS / "rotation_mnist5k.yaml", overrides)
    job = load_job(JOBS / "rotation_mnist5k.yaml", ["method=jigsaw", "method_args.grid=3"])
    assert job.parsed_method_args().permutation_count == 100
