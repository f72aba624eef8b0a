"""Synthesis network: the input layer, then the layers in stored order, sliceable at any position."""
from __future__ import annotations

import torch
from torch import nn

from .config import ExecutionOptions, SynthesisConfig
from .synthesis_input import SynthesisInput
from .synthesis_layer import SynthesisLayer


class SynthesisNetwork(nn.Module):
    """Layers are registered under their checkpoint names but always addressed by position.

    Names are not contiguous in released models (ImageNet models skip L8), so position i is
    `layer_names[i]` and uses ws[:, i + 1]; ws[:, 0] drives the input layer.
    """

    def __init__(self, config: SynthesisConfig, options: ExecutionOptions = ExecutionOptions()):
        super().__init__()
        self.config = config
        self.layer_names = [spec.name for spec in config.layers]
        self.input = SynthesisInput(config.input)
        for spec in config.layers:
            self.add_module(spec.name, SynthesisLayer(spec, options))

    def layer(self, position: int) -> SynthesisLayer:
        return getattr(self, self.layer_names[position])

    def run(self, x: torch.Tensor, ws: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Layers at positions start .. stop-1 applied to `x`, the feature entering position `start`."""
        if not 0 <= start <= stop <= len(self.layer_names):
            raise ValueError(f"layer range {start}..{stop} is outside 0..{len(self.layer_names)}")
        for i in range(start, stop):
            x = self.layer(i)(x, ws[:, i + 1])
        return x

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        """The image, scaled by output_scale, in float32."""
        x = self.run(self.input(ws[:, 0].float()), ws.float(), 0, len(self.layer_names))
        return x.float() * self.config.output_scale

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.input.reset_parameters(generator)
        for i in range(len(self.layer_names)):
            self.layer(i).reset_parameters(generator)
