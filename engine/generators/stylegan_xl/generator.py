"""StyleGAN-XL behind the layered-generator seam: one cut per synthesis layer, plus the pixels.

Cut k < last is the feature entering the synthesis layer at position k (cut 0 = the input layer's
output); the last cut is the image after ToRGB and output_scale. This is the GLaD / H-PD split:
f_k = to_f(ws, k), and synthesize(ws, f, k) = from_f(ws, f, k), using ws rows k+1 onwards. One
difference: H-PD's from_to skips output_scale when it runs ToRGB (its result is unused); here
advancing into the pixel cut scales, so that advance and features agree.
"""
from __future__ import annotations

import torch

from ..base import Cut, LayeredGenerator
from .config import ExecutionOptions, GeneratorConfig
from .mapping import MappingNetwork
from .synthesis import SynthesisNetwork


def _cuts(config: GeneratorConfig) -> list[Cut]:
    cuts = []
    for i, spec in enumerate(config.synthesis.layers):
        c, h, w = spec.in_shape
        cuts.append(Cut(i, f"{spec.name} ({h}×{w}×{c})", spec.in_shape))
    c, h, w = config.synthesis.layers[-1].out_shape
    cuts.append(Cut(len(cuts), f"pixels ({h}×{w}×{c})", (c, h, w)))
    return cuts


class StyleGANXLGenerator(LayeredGenerator):
    """The EMA generator of a StyleGAN-XL checkpoint (or a random one of any configuration).

    `state_dict()` has exactly the keys, shapes and dtypes of the authors' `G_ema`. Parameters are
    allocated uninitialised: load a state dict or call `reset_parameters(generator)`.
    """

    feature_clip = 10.0  # what GLaD/H-PD's released code clips f to at init and after each advance

    def __init__(self, config: GeneratorConfig, options: ExecutionOptions = ExecutionOptions()):
        super().__init__()
        self.config = config
        self.options = options
        self.mapping = MappingNetwork(config.mapping)  # registered as a submodule, see mapping_network
        self.synthesis = SynthesisNetwork(config.synthesis, options)
        self.z_dim = config.mapping.z_dim
        self.w_dim = config.mapping.w_dim
        self.num_ws = config.mapping.num_ws
        self.num_classes = config.mapping.c_dim
        self.resolution = config.synthesis.img_resolution
        self.channels = config.synthesis.img_channels
        self.layers = _cuts(config)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.mapping_network.reset_parameters(generator)
        self.synthesis.reset_parameters(generator)

    @property
    def mapping_network(self) -> MappingNetwork:
        # The submodule must be called "mapping" (state-dict keys mapping.*), a name the seam's
        # `mapping` method already takes; attribute lookup finds the method, so reach the module here.
        return self._modules["mapping"]

    def mapping(self, z: torch.Tensor, c_onehot: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        ws = self.mapping_network(z, c_onehot, truncation_psi)
        assert ws.shape == (z.shape[0], self.num_ws, self.w_dim)
        return ws

    def _check_ws(self, ws: torch.Tensor) -> None:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")

    def _check_feature(self, ws: torch.Tensor, f: torch.Tensor, layer: int) -> None:
        self.check_layer(layer)
        self._check_ws(ws)
        if f.shape != (ws.shape[0], *self.layers[layer].shape):
            raise ValueError(f"cut {layer} ({self.layers[layer].name}) takes f [N={ws.shape[0]}, "
                             f"{', '.join(map(str, self.layers[layer].shape))}], got {list(f.shape)}")

    def _to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self.config.synthesis.output_scale

    def features(self, ws: torch.Tensor, layer: int) -> torch.Tensor:
        self.check_layer(layer)
        self._check_ws(ws)
        ws = ws.float()
        f = self.synthesis.run(self.synthesis.input(ws[:, 0]), ws, 0, layer)
        f = self._to_pixels(f) if layer == self.pixel_cut else f
        assert f.shape == (ws.shape[0], *self.layers[layer].shape)
        return f

    def synthesize(self, ws: torch.Tensor, f: torch.Tensor, layer: int) -> torch.Tensor:
        self._check_feature(ws, f, layer)
        if layer == self.pixel_cut:
            return f
        img = self._to_pixels(self.synthesis.run(f, ws.float(), layer, self.pixel_cut))
        assert img.shape == (ws.shape[0], self.channels, self.resolution, self.resolution)
        return img

    def advance(self, ws: torch.Tensor, f: torch.Tensor, layer: int) -> torch.Tensor:
        self._check_feature(ws, f, layer)
        if layer == self.pixel_cut:
            raise ValueError(f"cut {layer} is the pixels; there is no next cut to advance to")
        out = self.synthesis.run(f, ws.float(), layer, layer + 1)
        out = self._to_pixels(out) if layer + 1 == self.pixel_cut else out
        assert out.shape == (ws.shape[0], *self.layers[layer + 1].shape)
        return out
