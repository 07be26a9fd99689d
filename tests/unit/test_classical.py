"""The classical baselines fitted in closed form: PCA and k-means features against scikit-learn
and their definitions, on small arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.decomposition import PCA as SklearnPCA

from reprlab.config import JobConfig
from reprlab.methods.kmeans import KMeans, KMeansArgs, zca_whitening
from reprlab.methods.pca import PCA, PCAArgs
from reprlab.models.backbones import build_backbone
from reprlab.models.classical import normalized_patches, triangle_activation


def _images(count: int = 60, side: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 1, side, side, generator=generator)


def test_pca_embedding_is_sklearns_transform() -> None:
    images = _images()
    method = PCA(build_backbone("pixels", 1, image_size=8), PCAArgs(components=5))
    metrics = method.fit_closed_form(images, seed=0)
    reference = SklearnPCA(5, random_state=0).fit(images.flatten(1).double().numpy())
    expected = reference.transform(images.flatten(1).double().numpy())
    assert np.allclose(method.embed(images).numpy(), expected, atol=1e-4)
    assert metrics["explained_variance"] == pytest.approx(
        reference.explained_variance_ratio_.sum(), rel=1e-6
    )
    assert method.pictures(images)["pca/eigen_images.png"].shape == (5, 1, 8, 8)


def test_whitened_pca_gives_unit_variance_components() -> None:
    images = _images(200)
    method = PCA(build_backbone("pixels", 1, image_size=8), PCAArgs(components=4, whiten=True))
    method.fit_closed_form(images, seed=0)
    variances = method.embed(images).double().var(dim=0)
    assert torch.allclose(variances, torch.ones(4, dtype=torch.float64), atol=1e-3)


def test_pca_refuses_more_components_than_the_data_has() -> None:
    method = PCA(build_backbone("pixels", 1, image_size=8), PCAArgs(components=30))
    with pytest.raises(ValueError, match="method_args.components: at most 20 for 20 images"):
        method.fit_closed_form(_images(20), seed=0)


def test_kmeans_refuses_more_clusters_than_points() -> None:
    method = KMeans(
        build_backbone("pixels", 1, image_size=8), KMeansArgs(features="pixels", clusters=30)
    )
    with pytest.raises(ValueError, match="method_args.clusters: at most 20 for 20 images"):
        method.fit_closed_form(_images(20), seed=0)


def test_triangle_activation_by_hand() -> None:
    # one point at 0 on a line, centroids at 1, 2 and 6: distances 1, 2, 6, mean 3
    points = torch.tensor([[0.0]])
    centroids = torch.tensor([[1.0], [2.0], [6.0]])
    assert torch.allclose(triangle_activation(points, centroids), torch.tensor([[2.0, 1.0, 0.0]]))


def test_zca_whitening_gives_identity_covariance() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(5000, 4)) @ rng.normal(size=(4, 4))
    mean, whiten = zca_whitening(rows, eps=1e-9)
    covariance = np.cov((rows - mean) @ whiten, rowvar=False)
    assert np.allclose(covariance, np.eye(4), atol=1e-6)
    assert np.allclose(whiten, whiten.T)  # ZCA: the symmetric whitening, closest to the input


def test_normalized_patches_have_zero_mean_and_unit_scale() -> None:
    patches = normalized_patches(_images(3, side=6), patch=3, brightness_eps=0.0)
    assert patches.shape == (3, 16, 9)
    assert torch.allclose(patches.mean(dim=2), torch.zeros(3, 16), atol=1e-5)
    assert torch.allclose(patches.var(dim=2), torch.ones(3, 16), atol=1e-4)


def test_kmeans_pixel_features_use_sklearns_centroids() -> None:
    images = _images()
    args = KMeansArgs(features="pixels", clusters=4)
    method = KMeans(build_backbone("pixels", 1, image_size=8), args)
    method.fit_closed_form(images, seed=0)
    points = images.flatten(1).double().numpy()
    reference = SklearnKMeans(4, n_init=3, random_state=0).fit(points)
    centroids = torch.from_numpy(reference.cluster_centers_).float()
    expected = triangle_activation(images.flatten(1), centroids)
    assert torch.allclose(method.embed(images), expected, atol=1e-5)


def test_kmeans_patch_features_pool_four_quadrants() -> None:
    images = _images(40, side=10)
    args = KMeansArgs(features="patches", clusters=6, patch_size=3, patches_per_image=20)
    method = KMeans(build_backbone("pixels", 1, image_size=10), args)
    method.fit_closed_form(images, seed=0)
    features = method.embed(images[:2])
    assert features.shape == (2, 24)
    # by hand for the first image: triangle codes on the 8x8 patch grid, mean of each quadrant
    encoder = method.backbone
    rows = normalized_patches(images[:1], 3, args.brightness_eps) - encoder.whiten_mean
    codes = triangle_activation((rows @ encoder.whiten)[0], encoder.centroids).view(8, 8, 6)
    quadrants = [codes[:4, :4], codes[:4, 4:], codes[4:, :4], codes[4:, 4:]]
    expected = torch.stack([q.mean(dim=(0, 1)) for q in quadrants], dim=1).flatten()
    assert torch.allclose(features[0], expected, atol=1e-5)
    assert method.pictures(images)["kmeans/centroids.png"].shape == (6, 1, 3, 3)


def test_classical_methods_need_the_pixels_backbone() -> None:
    with pytest.raises(ValueError, match="model.backbone: method 'pca' needs one of 'pixels'"):
        JobConfig(method="pca", model={"backbone": "conv4"})
    JobConfig(method="kmeans", model={"backbone": "pixels"})
