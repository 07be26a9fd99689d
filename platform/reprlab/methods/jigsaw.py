"""Jigsaw puzzles (Noroozi & Favaro 2016): cut an image into a grid of tiles, shuffle them by
one of a fixed set of permutations, and predict which one from the tiles' features."""

from __future__ import annotations

import itertools
import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from reprlab.methods.base import Method, MethodArgs
from reprlab.models.backbones import BACKBONES
from reprlab.models.heads import mlp_head

PERMUTATION_SEED = 0
"""Seed of the candidate pool: every worker and every run builds the same permutation set."""
CANDIDATE_POOL = 4000
"""Random permutations of 9 tiles the grid-3 set is chosen from (9! = 362880 in all)."""
DEFAULT_GRID3_PERMUTATIONS = 100
"""The paper's set size: 100 permutations of maximal Hamming distance."""


def all_permutations(tiles: int) -> torch.Tensor:
    """Every ordering of `tiles` tiles ([tiles!, tiles] int64, lexicographic): the grid-2 set."""
    return torch.tensor(list(itertools.permutations(range(tiles))), dtype=torch.long)


def pairwise_hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[n, m] count of positions where permutation a[i] and permutation b[j] differ."""
    return (a.unsqueeze(1) != b.unsqueeze(0)).sum(-1)


def maximal_hamming_permutations(
    count: int, tiles: int = 9, seed: int = PERMUTATION_SEED, pool: int = CANDIDATE_POOL
) -> torch.Tensor:
    """`count` permutations ([count, tiles] int64) picked greedily from a seeded random pool:
    start from its first one, then repeatedly add the candidate whose minimum Hamming distance
    to those chosen is largest (first one on ties), so the classes are far apart.

    The paper's Algorithm 1 maximises the mean distance over all 9! orderings; maximising the
    minimum over a pool directly raises the smallest distance between two classes."""
    generator = torch.Generator().manual_seed(seed)
    candidates = torch.rand(pool, tiles, generator=generator).argsort(dim=1)
    chosen = [0]
    nearest = pairwise_hamming(candidates, candidates[:1])[:, 0]
    for _ in range(count - 1):
        best = int(nearest.argmax())
        if nearest[best] == 0:
            raise ValueError(f"jigsaw: a pool of {pool} holds fewer than {count} permutations")
        chosen.append(best)
        nearest = torch.minimum(
            nearest, pairwise_hamming(candidates, candidates[best : best + 1])[:, 0]
        )
    return candidates[chosen]


def random_offsets(batch: int, grid: int, gap: int, device: torch.device) -> torch.Tensor:
    """Uniform (row, column) offsets in 0..gap of every tile inside its cell ([B, grid^2, 2])."""
    return torch.randint(gap + 1, (batch, grid * grid, 2), device=device)


def cut_tiles(images: torch.Tensor, grid: int, gap: int, offsets: torch.Tensor) -> torch.Tensor:
    """Tiles [B, grid^2, C, h - gap, w - gap] of [B,C,H,W] images, row-major: tile k is cut from
    cell k (h = H // grid by w = W // grid; rows and columns past the last cell are unused) at
    `offsets[:, k]` (row, column) inside the cell."""
    batch, _, height, width = images.shape
    cell_h, cell_w = height // grid, width // grid
    tile_h, tile_w = cell_h - gap, cell_w - gap
    if min(tile_h, tile_w) < 1:
        raise ValueError(f"jigsaw: gap {gap} leaves no tile of a {cell_h}x{cell_w} px cell")
    cells = torch.arange(grid * grid, device=images.device)
    top = (cells // grid) * cell_h + offsets[..., 0]
    left = (cells % grid) * cell_w + offsets[..., 1]
    rows = top.unsqueeze(-1) + torch.arange(tile_h, device=images.device)
    cols = left.unsqueeze(-1) + torch.arange(tile_w, device=images.device)
    index = torch.arange(batch, device=images.device).view(batch, 1, 1, 1)
    tiles = images[index, :, rows.unsqueeze(-1), cols.unsqueeze(-2)]  # [B, T, h, w, C]
    return tiles.permute(0, 1, 4, 2, 3)


def shuffle_tiles(tiles: torch.Tensor, permutations: torch.Tensor) -> torch.Tensor:
    """Tiles [B, T, ...] reordered so that position i of image b holds its tile
    `permutations[b, i]` ([B, T] int64)."""
    index = torch.arange(tiles.shape[0], device=tiles.device).unsqueeze(1)
    return tiles[index, permutations]


def standardise_tiles(tiles: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each tile's channels [..., C, h, w] to zero mean and unit variance on their own, so
    brightness and contrast across tiles give no cue (the paper normalises each tile)."""
    mean = tiles.mean(dim=(-2, -1), keepdim=True)
    var = tiles.var(dim=(-2, -1), keepdim=True, unbiased=False)
    return (tiles - mean) / (var + eps).sqrt()


class JigsawArgs(MethodArgs):
    grid: Literal[2, 3] = Field(2, description="tiles per side: 4 or 9 tiles")
    num_permutations: int | None = Field(
        None,
        ge=2,
        le=1000,
        description="classes of the grid-3 puzzle (None: the paper's 100); grid 2 always uses "
        "all 24 orderings of its 4 tiles",
    )
    upsample: int | None = Field(
        None,
        gt=0,
        description="side images are resized to (bilinear) before tiling, None: as they come. "
        "Grid 3 on 28 px digits: 63 gives 21 px cells, 18 px tiles at gap 3",
    )
    gap: int = Field(
        2,
        ge=0,
        description="pixels a cell is larger than its tile, which sits at a random offset in "
        "it, so tile edges do not line up (the paper: 64 px tiles in 85 px cells). Grid 2 on "
        "28 px digits: 14 px cells, 12 px tiles",
    )
    normalize_tiles: bool = Field(
        False,
        description="standardise each tile on its own as the paper does; off by default as the "
        "encoder is then evaluated on un-normalised whole images",
    )
    head_hidden_dim: int = Field(512, gt=0, description="hidden width of the permutation MLP")

    @model_validator(mode="after")
    def _grid2_uses_every_ordering(self) -> JigsawArgs:
        if self.grid == 2 and self.num_permutations not in (None, 24):
            raise ValueError(
                f"num_permutations: grid 2 uses all 24 orderings, got {self.num_permutations}"
            )
        return self

    @property
    def permutation_count(self) -> int:
        """How many permutations (classes) the puzzle has."""
        if self.grid == 2:
            return math.factorial(4)
        return self.num_permutations or DEFAULT_GRID3_PERMUTATIONS


class Jigsaw(Method):
    """A siamese "context-free network": every tile goes through the shared encoder on its own
    (conv4's pooling takes tiles of any size), the tile features are concatenated in shuffled
    order and an MLP predicts which permutation shuffled them."""

    Args = JigsawArgs
    backbones: ClassVar[tuple[str, ...]] = tuple(BACKBONES)
    """The convolutional encoders: they take tiles of any size, the ViTs a fixed one."""

    def __init__(self, backbone: nn.Module, args: JigsawArgs) -> None:
        super().__init__(backbone, args)
        tiles = args.grid * args.grid
        if args.grid == 2:
            permutations = all_permutations(tiles)
        else:
            permutations = maximal_hamming_permutations(args.permutation_count, tiles)
        self.register_buffer("permutations", permutations, persistent=False)
        self.classifier = mlp_head(
            tiles * backbone.num_features, args.head_hidden_dim, len(permutations)
        )

    def puzzles(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shuffled tiles [B, T, C, h, w] of each image, with random offsets and a random
        permutation from the set, and the index of that permutation ([B] int64)."""
        args = self.args
        if args.upsample is not None:
            size = (args.upsample, args.upsample)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        offsets = random_offsets(images.shape[0], args.grid, args.gap, images.device)
        tiles = cut_tiles(images, args.grid, args.gap, offsets)
        if args.normalize_tiles:
            tiles = standardise_tiles(tiles)
        labels = torch.randint(len(self.permutations), (images.shape[0],), device=images.device)
        return shuffle_tiles(tiles, self.permutations[labels]), labels

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["view1"]
        tiles, labels = self.puzzles(images)
        features = self.backbone(tiles.flatten(0, 1)).view(tiles.shape[0], -1)
        logits = self.classifier(features).float()
        accuracy = (logits.argmax(1) == labels).float().mean()
        with torch.no_grad():
            whole = self.backbone(images)  # what `embed` gives: the encoder on whole images
        return {
            "loss": F.cross_entropy(logits, labels),
            "jigsaw_acc": accuracy.detach(),
            "features": whole,
        }
