"""k-means features (Coates, Lee & Ng 2011): centroids of raw pixels, or of brightness-normalised,
ZCA-whitened patches pooled over the image's quadrants, each point encoded by the "triangle"
activation. Fitted by scikit-learn in closed form."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from reprlab.methods.base import Method, MethodArgs
from reprlab.models.classical import PatchTriangleEncoder, PixelEncoder, PixelTriangleEncoder


class KMeansArgs(MethodArgs):
    features: Literal["pixels", "patches"] = Field(
        "patches", description="centroids of whole images, or of whitened patches (Coates)"
    )
    clusters: int = Field(200, ge=2, description="centroids K (patches: 4K features)")
    patch_size: int = Field(6, ge=2, description="patches: side of a patch")
    patches_per_image: int = Field(40, ge=1, description="patches: random patches fitted per image")
    brightness_eps: float = Field(
        0.01, gt=0, description="patches: added to the variance when normalising (0-1 pixels)"
    )
    zca_eps: float = Field(0.1, gt=0, description="patches: added to the eigenvalues in ZCA")


def zca_whitening(rows: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean, W) such that (rows - mean) @ W has an identity covariance up to `eps`:
    W = V diag(1 / sqrt(lambda + eps)) V^T from the eigen-decomposition of the covariance."""
    mean = rows.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(rows - mean, rowvar=False))
    return mean, (eigenvectors / np.sqrt(eigenvalues + eps)) @ eigenvectors.T


class KMeans(Method):
    """Triangle-activation features against the train split's k-means centroids."""

    Args = KMeansArgs
    backbones = ("pixels",)
    fits_in_closed_form = True

    def __init__(self, backbone: nn.Module, args: KMeansArgs) -> None:
        assert isinstance(backbone, PixelEncoder)
        if args.features == "pixels":
            encoder: nn.Module = PixelTriangleEncoder(backbone, args.clusters)
        else:
            encoder = PatchTriangleEncoder(
                backbone.in_chans, args.patch_size, args.clusters, args.brightness_eps
            )
        super().__init__(encoder, args)
        self.in_chans = backbone.in_chans

    def fit_closed_form(self, images: torch.Tensor, seed: int) -> dict[str, float]:
        """`inertia`: the mean squared distance of a fitted point to its centroid."""
        from sklearn.cluster import KMeans as SklearnKMeans  # driver only
        from sklearn.cluster import MiniBatchKMeans

        args = self.args
        points = (
            images.flatten(1).double().numpy()
            if args.features == "pixels"
            else self._patch_sample(images, seed)
        )
        if args.clusters > len(points):
            raise ValueError(
                f"method_args.clusters: at most {len(points)} for {len(images)} images "
                f"({args.features}), got {args.clusters}"
            )
        if args.features == "pixels":
            fitted = SklearnKMeans(args.clusters, n_init=3, random_state=seed).fit(points)
        else:
            mean, whiten = zca_whitening(points, args.zca_eps)
            points = (points - mean) @ whiten
            self.backbone.whiten_mean.copy_(torch.from_numpy(mean))
            self.backbone.whiten.copy_(torch.from_numpy(whiten))
            fitted = MiniBatchKMeans(
                args.clusters, batch_size=4096, n_init=3, random_state=seed
            ).fit(points)
        self.backbone.centroids.copy_(torch.from_numpy(fitted.cluster_centers_))
        return {"inertia": float(fitted.inertia_ / len(points))}

    def _patch_sample(self, images: torch.Tensor, seed: int) -> np.ndarray:
        """`patches_per_image` random normalised patches of every image, float64 rows."""
        patches = self.backbone
        generator = torch.Generator().manual_seed(seed)
        chosen = []
        for start in range(0, len(images), 512):
            rows = patches.normalized(images[start : start + 512])
            picks = torch.randint(
                rows.shape[1], (rows.shape[0], self.args.patches_per_image), generator=generator
            )
            chosen.append(torch.gather(rows, 1, picks[..., None].expand(-1, -1, rows.shape[2])))
        return torch.cat(chosen).flatten(0, 1).double().numpy()

    def pictures(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The first 64 centroids as images (whole images, or whitened patches)."""
        shown = self.backbone.centroids[:64]
        side = self.args.patch_size
        if self.args.features == "pixels":
            side = self.backbone.pixels.image_size
        return {"kmeans/centroids.png": shown.reshape(-1, self.in_chans, side, side)}
