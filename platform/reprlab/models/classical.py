"""Encoders fitted in closed form rather than by gradient steps: raw pixels, a linear projection
(PCA) and k-means triangle features on pixels or whitened patches (Coates et al. 2011). Their
fitted statistics are buffers, so a checkpoint, `embed` and the logged encoder work as for any
network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelEncoder(nn.Module):
    """The flattened pixels of a [B, C, S, S] image: the raw-pixel representation."""

    def __init__(self, in_chans: int, image_size: int) -> None:
        super().__init__()
        self.in_chans, self.image_size = in_chans, image_size
        self.num_features = in_chans * image_size * image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class LinearProjection(nn.Module):
    """(pixels - mean) @ components.T: an affine map fitted elsewhere (PCA's k components)."""

    def __init__(self, pixels: PixelEncoder, components: int) -> None:
        super().__init__()
        self.pixels = pixels
        self.register_buffer("mean", torch.zeros(pixels.num_features))
        self.register_buffer("components", torch.zeros(components, pixels.num_features))
        self.num_features = components

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.pixels(x) - self.mean) @ self.components.T


def triangle_activation(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Coates et al.'s "triangle" k-means encoding: f_k = max(0, mean_j(z_j) - z_k) with z_k
    the Euclidean distance of a [N, D] point to centroid k of [K, D]; about half the features
    are zero, the rest grow as a point nears a centroid."""
    distances = torch.cdist(points, centroids)
    return F.relu(distances.mean(dim=1, keepdim=True) - distances)


def normalized_patches(x: torch.Tensor, patch: int, brightness_eps: float) -> torch.Tensor:
    """Every patch x patch window of [B, C, S, S] images (stride 1) as rows [B, L, C*p*p], each
    brightness- and contrast-normalised (mean 0, divided by sqrt(variance + eps))."""
    rows = F.unfold(x, patch).transpose(1, 2)
    rows = rows - rows.mean(dim=2, keepdim=True)
    return rows / torch.sqrt(rows.var(dim=2, keepdim=True) + brightness_eps)


class PatchTriangleEncoder(nn.Module):
    """Coates, Lee & Ng 2011: normalised, ZCA-whitened patches encoded by the triangle
    activation against K centroids, pooled over the four quadrants of the image (4K features;
    averaged rather than summed, which only scales them)."""

    def __init__(self, in_chans: int, patch: int, clusters: int, brightness_eps: float) -> None:
        super().__init__()
        self.patch, self.brightness_eps = patch, brightness_eps
        width = in_chans * patch * patch
        self.register_buffer("whiten_mean", torch.zeros(width))
        self.register_buffer("whiten", torch.eye(width))
        self.register_buffer("centroids", torch.zeros(clusters, width))
        self.num_features = 4 * clusters

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, C*p*p] brightness- and contrast-normalised patches (before whitening)."""
        return normalized_patches(x, self.patch, self.brightness_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, side = x.shape[0], x.shape[-1] - self.patch + 1
        rows = (self.normalized(x) - self.whiten_mean) @ self.whiten
        codes = triangle_activation(rows.reshape(-1, rows.shape[-1]), self.centroids)
        codes = codes.view(batch, side, side, -1).permute(0, 3, 1, 2)
        return F.adaptive_avg_pool2d(codes, 2).flatten(1)


class PixelTriangleEncoder(nn.Module):
    """The triangle activation of the flattened pixels against K centroids (K features)."""

    def __init__(self, pixels: PixelEncoder, clusters: int) -> None:
        super().__init__()
        self.pixels = pixels
        self.register_buffer("centroids", torch.zeros(clusters, pixels.num_features))
        self.num_features = clusters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return triangle_activation(self.pixels(x), self.centroids)
