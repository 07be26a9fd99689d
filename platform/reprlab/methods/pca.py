"""PCA on raw pixels (Pearson 1901; "eigen-digits"): the classical linear baseline, fitted by
scikit-learn in closed form."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from reprlab.methods.base import Method, MethodArgs
from reprlab.models.classical import LinearProjection, PixelEncoder


class PCAArgs(MethodArgs):
    components: int = Field(50, gt=0, description="principal components kept (k)")
    whiten: bool = Field(False, description="scale each component to unit variance")


class PCA(Method):
    """The top-k principal components of the train split's pixels; embed = (x - mean) W^T."""

    Args = PCAArgs
    backbones = ("pixels",)
    fits_in_closed_form = True

    def __init__(self, backbone: nn.Module, args: PCAArgs) -> None:
        assert isinstance(backbone, PixelEncoder)
        super().__init__(LinearProjection(backbone, args.components), args)

    def fit_closed_form(self, images: torch.Tensor, seed: int) -> dict[str, float]:
        """`explained_variance`: the fraction of pixel variance the k components keep."""
        from sklearn.decomposition import PCA as SklearnPCA  # driver only

        pixels = self.backbone.pixels(images).double().numpy()
        if self.args.components > min(pixels.shape):
            raise ValueError(
                f"method_args.components: at most {min(pixels.shape)} for {len(pixels)} images "
                f"of {pixels.shape[1]} pixels, got {self.args.components}"
            )
        fitted = SklearnPCA(self.args.components, whiten=self.args.whiten, random_state=seed)
        fitted.fit(pixels)
        components = torch.from_numpy(fitted.components_)
        if self.args.whiten:
            components = components / torch.from_numpy(fitted.explained_variance_).sqrt()[:, None]
        self.backbone.mean.copy_(torch.from_numpy(fitted.mean_))
        self.backbone.components.copy_(components)
        return {"explained_variance": float(fitted.explained_variance_ratio_.sum())}

    def pictures(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The first 16 components as images (eigen-digits)."""
        pixels = self.backbone.pixels
        shown = self.backbone.components[:16]
        side = pixels.image_size
        return {"pca/eigen_images.png": shown.view(-1, pixels.in_chans, side, side)}
