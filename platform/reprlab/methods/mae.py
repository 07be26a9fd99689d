"""MAE (He et al. 2021): hide most patches of an image, encode only the visible ones with a
ViT, and reconstruct the pixels of the hidden ones with a light transformer decoder."""

from __future__ import annotations

import math
from functools import partial
from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from reprlab.methods.base import Method, MethodArgs
from reprlab.models.backbones import VIT_SIZES, sincos_2d_pos_embed


def visible_count(length: int, mask_ratio: float) -> int:
    """int(length * (1 - mask_ratio)), as in MAE, without float rounding losing a token
    (10 tokens at ratio 0.9 keep 1, where int(10 * (1 - 0.9)) is 0)."""
    return math.floor(length * (1 - mask_ratio) + 1e-9)


def random_masking(
    x: torch.Tensor, mask_ratio: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a uniformly random `visible_count(L, mask_ratio)` of the L tokens of each sample.

    Per-sample noise is argsorted into a shuffle whose first tokens are kept. Returns the kept
    tokens [B, keep, D] (in shuffled order), the mask [B, L] in the original token order
    (1 = removed, 0 = kept) and `ids_restore` [B, L], the permutation that undoes the shuffle:
    gathering [kept, removed] tokens with it gives back the original order."""
    batch, length, dim = x.shape
    keep = visible_count(length, mask_ratio)
    noise = torch.rand(batch, length, device=x.device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    visible = x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(batch, length, device=x.device)
    mask[:, :keep] = 0
    return visible, mask.gather(1, ids_restore), ids_restore


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B,C,H,W] images -> [B, L, patch_size^2 * C] patches, row-major like the patch embedding;
    each patch's pixels are ordered (row, column, channel) as in MAE."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def norm_pix_target(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch minus the mean of its pixels, over sqrt(their variance + eps); the variance is
    unbiased (n - 1), as in MAE's code (`torch.var`)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def masked_patch_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per patch, averaged over the removed patches (mask == 1) only."""
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


class MAEArgs(MethodArgs):
    mask_ratio: float = Field(0.75, gt=0, lt=1, description="fraction of patches removed")
    norm_pix_loss: bool = Field(True, description="reconstruct per-patch normalised pixels")
    decoder_embed_dim: int = Field(512, gt=0)
    decoder_depth: int = Field(8, ge=1)
    decoder_heads: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _decoder_shape(self) -> MAEArgs:
        if self.decoder_embed_dim % (4 * self.decoder_heads):
            raise ValueError(
                f"decoder_embed_dim: must be a multiple of 4 * decoder_heads "
                f"({4 * self.decoder_heads}), got {self.decoder_embed_dim}"
            )
        return self


class MAE(Method):
    """ViT encoder on the visible patches, light decoder on all tokens (visible latents plus
    shared mask tokens), MSE on the pixels of the removed patches.

    `embed` runs the encoder on all patches (no masking) and returns its normalised class
    token: on mnist5k it probed 5 points above the mean of the patch tokens after MAE training
    (whose patch tokens specialise in local reconstruction), as in the paper's linear probes."""

    Args = MAEArgs
    backbones: ClassVar[tuple[str, ...]] = tuple(VIT_SIZES)

    def __init__(self, backbone: nn.Module, args: MAEArgs) -> None:
        # timm imported here, not by every process that imports the registry (worker_imports.py)
        from timm.models.vision_transformer import Block, VisionTransformer

        if not isinstance(backbone, VisionTransformer) or backbone.cls_token is None:
            raise ValueError(
                f"mae: needs a ViT backbone ({', '.join(self.backbones)}), "
                f"got {type(backbone).__name__}"
            )
        super().__init__(backbone, args)
        patch_embed = backbone.patch_embed
        if visible_count(patch_embed.num_patches, args.mask_ratio) < 1:
            raise ValueError(
                f"mae: mask_ratio {args.mask_ratio} leaves no visible patch of "
                f"{patch_embed.num_patches}"
            )
        self.patch_size = patch_embed.patch_size[0]
        in_chans = patch_embed.proj.in_channels
        dim = args.decoder_embed_dim
        self.decoder_embed = nn.Linear(backbone.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        pos_embed = torch.cat(
            [torch.zeros(1, dim), sincos_2d_pos_embed(dim, *patch_embed.grid_size)]
        )
        self.register_buffer("decoder_pos_embed", pos_embed.unsqueeze(0), persistent=False)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_blocks = nn.Sequential(
            *[
                Block(dim, args.decoder_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm_layer)
                for _ in range(args.decoder_depth)
            ]
        )
        self.decoder_norm = norm_layer(dim)
        self.decoder_pred = nn.Linear(dim, self.patch_size**2 * in_chans)
        self._init_decoder()

    def _init_decoder(self) -> None:
        """MAE's initialisation: xavier-uniform linear weights, zero biases, N(0, 0.02) mask."""
        nn.init.normal_(self.mask_token, std=0.02)
        for module in [self.decoder_embed, self.decoder_blocks, self.decoder_pred]:
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)

    def encode_visible(
        self, images: torch.Tensor, mask_ratio: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents [B, 1 + keep, D] (class token first) of a random visible subset of patches,
        with the mask and `ids_restore` of `random_masking`."""
        vit = self.backbone
        x = vit.patch_embed(images) + vit.pos_embed[:, 1:]
        x, mask, ids_restore = random_masking(x, mask_ratio)
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = vit.blocks(vit.norm_pre(torch.cat([cls, x], dim=1)))
        return vit.norm(x), mask, ids_restore

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predicted pixels [B, L, patch_size^2 * C] of every patch, in the original order."""
        x = self.decoder_embed(latent)
        batch, length = ids_restore.shape
        mask_tokens = self.mask_token.to(x.dtype).expand(batch, length + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)
        patches = patches.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        return self.decoder_pred(self.decoder_norm(self.decoder_blocks(x)))[:, 1:]

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The normalised class token of the encoder on all patches of float [B,C,H,W] images."""
        return self.backbone.forward_features(images)[:, 0]

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["view1"]
        latent, mask, ids_restore = self.encode_visible(images, self.args.mask_ratio)
        pred = self.decode(latent, ids_restore).float()
        target = patchify(images.float(), self.patch_size)
        if self.args.norm_pix_loss:
            target = norm_pix_target(target)
        # The online probe reads the class token of the visible patches: free here, where a
        # full-image embed would add half a step on CPU.
        return {"loss": masked_patch_mse(pred, target, mask), "features": latent[:, 0].detach()}
