"""The layered-generator seam: one interface for every way of parameterising synthetic images.

A generator is a chain of cuts. Cut 0 is the first synthesis input, the last cut is the pixels.
`features(ws, k)` gives the tensor entering cut k, `synthesize(ws, f, k)` runs the rest of the
network from there, and `advance(ws, f, k)` moves a feature from cut k to cut k + 1. H-PD, GLaD and
Pixel distillation all drive this interface and nothing else.

Laws every implementation keeps (tests/test_generator_laws.py checks them):
    synthesize(ws, features(ws, k), k) == forward(ws)          for every k
    advance(ws, features(ws, k), k)    == features(ws, k + 1)   for every k < last
    gradients of synthesize flow to both ws and f
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Cut:
    """One place where the synthesis network can be cut.

    `shape` is the per-sample shape (C, H, W) of the feature entering the cut; `name` is a short
    label for the UI, e.g. "b8.conv1 8x8x128".
    """

    index: int
    name: str
    shape: tuple[int, ...]


class LayeredGenerator(nn.Module, ABC):
    """A conditional generator that can be cut at any of its `layers`.

    Subclasses set the attributes below in `__init__` and implement the four abstract methods.
    Images come out in [-1, 1] with `channels` channels at `resolution` pixels.
    """

    z_dim: int
    num_ws: int
    w_dim: int
    num_classes: int
    resolution: int
    channels: int
    layers: list[Cut]
    # Bound applied to f at initialisation and after every advance (None: no clipping). StyleGAN-XL's
    # released H-PD code clips to [-10, 10]; other generators' features may be larger by design.
    feature_clip: float | None = None
    # Learning rates (W+, f) per objective tuned for this generator; None: the paper's, tuned on StyleGAN-XL.
    tuned_lrs: dict[str, tuple[float, float]] | None = None
    # The rate of a GAN run's pixel space per objective, whose pixels start as this generator's images (not
    # real ones, for which the Pixel method's rate was set), tuned at IPC 1 (runs scale it by their IPC);
    # None: the Pixel method's rate.
    tuned_pixel_lrs: dict[str, float] | None = None

    @property
    def pixel_cut(self) -> int:
        return len(self.layers) - 1

    @abstractmethod
    def mapping(self, z: torch.Tensor, c_onehot: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """[N, z_dim], [N, num_classes] -> ws [N, num_ws, w_dim]."""

    @abstractmethod
    def features(self, ws: torch.Tensor, layer: int) -> torch.Tensor:
        """The feature tensor entering cut `layer`."""

    @abstractmethod
    def synthesize(self, ws: torch.Tensor, f: torch.Tensor, layer: int) -> torch.Tensor:
        """Run the network from cut `layer` (whose input is `f`) to the pixels."""

    @abstractmethod
    def advance(self, ws: torch.Tensor, f: torch.Tensor, layer: int) -> torch.Tensor:
        """The feature at cut `layer + 1`, computed from `f` at cut `layer`."""

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.synthesize(ws, self.features(ws, 0), 0)

    @torch.no_grad()
    def mean_ws(self, c_onehot: torch.Tensor, n: int = 1000, generator: torch.Generator | None = None) -> torch.Tensor:
        """Average-noise initialisation: per row of `c_onehot`, the mean of mapping(z_k, c) over n noises.

        The paper says "average the noises, then map"; a mean of Gaussians is just another random
        direction after the mapping network's normalisation, so we average in W instead, as the
        released code does (see README, "Method notes").
        """
        out = []
        for c in c_onehot:
            z = torch.randn(n, self.z_dim, generator=generator, device=c.device)
            out.append(self.mapping(z, c.expand(n, -1)).mean(dim=0))
        return torch.stack(out)

    def pixel_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high) per channel, each [1, C, 1, 1]: the values of f at the pixel cut that render to [-1, 1],
        i.e. to [0, 1] in pixel space (optimisers that clamp pixels, as SRe²L's does, clamp to them). At the
        pixel cut f is the image itself, unless a generator keeps its pixels in another space."""
        shape = (1, self.channels, 1, 1)
        return torch.full(shape, -1.0), torch.full(shape, 1.0)

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < len(self.layers):
            raise ValueError(f"layer {layer} is out of range: this generator has cuts 0..{len(self.layers) - 1}")
