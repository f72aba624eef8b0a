"""One StyleGAN3-T synthesis layer: modulated convolution, then the filtered leaky ReLU."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import ExecutionOptions, LayerSpec
from .fully_connected import FullyConnectedLayer
from .ops.filtered_lrelu import filtered_lrelu, filtered_lrelu_ref
from .ops.filters import lowpass_filter
from .ops.modulated_conv2d import modulated_conv2d


class SynthesisLayer(nn.Module):
    """[N, in_ch, H, W] features and a w [N, w_dim] -> [N, out_ch, H', W'] (see LayerSpec)."""

    def __init__(self, spec: LayerSpec, options: ExecutionOptions = ExecutionOptions()):
        super().__init__()
        self.spec = spec
        self.fp16 = options.fp16_on_cuda and spec.use_fp16
        self._filtered_lrelu = filtered_lrelu if options.memory_saving else filtered_lrelu_ref
        k = spec.conv_kernel
        self.weight = nn.Parameter(torch.empty(spec.out_channels, spec.in_channels, k, k))
        self.bias = nn.Parameter(torch.empty(spec.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", torch.empty(spec.up_taps) if spec.up_taps > 1 else None)
        self.register_buffer("down_filter", torch.empty(spec.down_taps) if spec.down_taps > 1 else None)
        self.affine = FullyConnectedLayer(spec.affine)

    def compute_dtype(self, device: torch.device) -> torch.dtype:
        return torch.float16 if self.fp16 and device.type == "cuda" else torch.float32

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if x.shape[1:] != spec.in_shape or w.shape != (x.shape[0], spec.w_dim):
            raise ValueError(f"{spec.name} expects x [N, {', '.join(map(str, spec.in_shape))}] and w [N, {spec.w_dim}], got {list(x.shape)}, {list(w.shape)}")
        styles = self.affine(w.float())
        if spec.is_torgb:
            # ToRGB is not demodulated; this fixed gain takes its place.
            styles = styles / math.sqrt(spec.in_channels * spec.conv_kernel**2)
        x = modulated_conv2d(x.to(self.compute_dtype(x.device)), self.weight, styles, demodulate=not spec.is_torgb,
                             input_gain=self.magnitude_ema.rsqrt())
        x = self._filtered_lrelu(
            x, self.bias, self.up_filter, self.down_filter, up=spec.up_factor, down=spec.down_factor,
            padding=spec.padding, gain=1.0 if spec.is_torgb else math.sqrt(2), slope=1.0 if spec.is_torgb else 0.2,
            clamp=spec.conv_clamp,
        )
        assert x.shape == (w.shape[0], *spec.out_shape), f"{spec.name} produced {list(x.shape)}"
        return x

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Random weights and the filters the layer's attributes describe."""
        spec = self.spec
        self.weight.copy_(torch.randn(self.weight.shape, generator=generator))
        self.bias.zero_()
        self.magnitude_ema.fill_(1.0)
        self.affine.reset_parameters(generator, bias_init=1.0)
        if self.up_filter is not None:
            self.up_filter.copy_(lowpass_filter(spec.up_taps, spec.in_cutoff, 2 * spec.in_half_width, spec.tmp_sampling_rate))
        if self.down_filter is not None:
            self.down_filter.copy_(lowpass_filter(spec.down_taps, spec.out_cutoff, 2 * spec.out_half_width, spec.tmp_sampling_rate))

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{s.name}: {s.in_channels}->{s.out_channels}, {s.in_size[0]}->{s.out_size[0]} px, "
                f"up {s.up_factor} down {s.down_factor}, torgb={s.is_torgb}")
