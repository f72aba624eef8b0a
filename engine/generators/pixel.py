"""The trivial parameterisation: the pixels themselves, as one cut.

Its ws *are* the flattened pixels (num_ws 1, w_dim C*H*W) so that Pixel, GLaD and H-PD share one
engine path and the layer laws hold without special cases. Given a dataset's mean and std, the pixels
live in that dataset's normalised space (where the reference code optimises them, so its learning
rates carry over) and `synthesize` maps them to the [-1, 1] range every generator produces.
"""
from __future__ import annotations

import torch

from .base import Cut, LayeredGenerator


class PixelGenerator(LayeredGenerator):
    def __init__(self, channels: int, resolution: int, num_classes: int,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None):
        super().__init__()
        shape = (1, channels, 1, 1)
        # Without statistics the pixels are already in [-1, 1]: mean 0.5, std 0.5 is the identity map.
        self.register_buffer("_mean", torch.tensor(mean or (0.5,) * channels).view(shape), persistent=False)
        self.register_buffer("_std", torch.tensor(std or (0.5,) * channels).view(shape), persistent=False)
        self.channels = channels
        self.resolution = resolution
        self.num_classes = num_classes
        self.z_dim = channels * resolution * resolution
        self.w_dim = self.z_dim
        self.num_ws = 1
        shape = (channels, resolution, resolution)
        self.layers = [Cut(0, f"pixels {resolution}x{resolution}x{channels}", shape)]

    def mapping(self, z: torch.Tensor, c_onehot: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        return (z * truncation_psi).unsqueeze(1)

    @torch.no_grad()
    def mean_ws(self, c_onehot: torch.Tensor, n: int = 1000, generator: torch.Generator | None = None) -> torch.Tensor:
        # The mean of zero-mean noise: a flat mid-grey image per class.
        return torch.zeros(len(c_onehot), 1, self.w_dim, device=c_onehot.device)

    def features(self, ws: torch.Tensor, layer: int) -> torch.Tensor:
        self.check_layer(layer)
        return ws[:, 0].reshape(-1, *self.layers[0].shape)

    def synthesize(self, ws: torch.Tensor, f: torch.Tensor, layer: int) -> torch.Tensor:
        self.check_layer(layer)
        return (f * self._std + self._mean) * 2 - 1

    def pixel_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[0, 1] in the dataset's normalised space: [-mean/std, (1 - mean)/std] per channel (SRe²L's clamp)."""
        return -self._mean / self._std, (1 - self._mean) / self._std

    def advance(self, ws: torch.Tensor, f: torch.Tensor, layer: int) -> torch.Tensor:
        raise ValueError("a pixel generator has a single cut; there is no next cut to advance to")
