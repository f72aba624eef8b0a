"""Design a stem (first-stage) StyleGAN-XL configuration from its hyper-parameters.

The formulas are those the checkpoints' layer attributes were computed with (architecture notes,
section 1.5). Released checkpoints are read, never designed; this exists to build small random
generators with the same layer structure (tests, benchmarks) and to check those formulas.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import FullyConnectedSpec, GeneratorConfig, InputSpec, LayerSpec, MappingConfig, SynthesisConfig


@dataclass(frozen=True)
class StemDesign:
    """Hyper-parameters of a StyleGAN3-T stem (defaults: the released StyleGAN-XL recipe)."""

    img_resolution: int = 16
    c_dim: int = 1000
    z_dim: int = 64
    w_dim: int = 512
    embed_rows: int = 1000
    embed_dim: int = 320
    mapping_layers: int = 2
    num_layers: int = 10
    num_critical: int = 2
    channel_base: int = 65536
    channel_max: int = 1024
    margin_size: int = 10
    first_cutoff: float = 2.0
    first_stopband: float = 2**2.1
    last_stopband_rel: float = 2**0.3
    conv_kernel: int = 3
    filter_size: int = 6
    lrelu_upsampling: int = 2
    conv_clamp: float | None = 256.0
    num_fp16_res: int = 4
    img_channels: int = 3
    output_scale: float = 0.25

    def __post_init__(self) -> None:
        if self.img_resolution < 4 or self.img_resolution & (self.img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {self.img_resolution}")
        if not 0 < self.num_critical < self.num_layers:
            raise ValueError(f"need 0 < num_critical ({self.num_critical}) < num_layers ({self.num_layers})")
        if self.c_dim > self.embed_rows:
            raise ValueError(f"c_dim {self.c_dim} exceeds the {self.embed_rows} embedding rows")
        if min(self.z_dim, self.w_dim, self.mapping_layers, self.channel_base, self.channel_max) < 1:
            raise ValueError("sizes must be positive")


def _fc(in_features: int, out_features: int, activation: str, lr_multiplier: float = 1.0) -> FullyConnectedSpec:
    return FullyConnectedSpec(in_features, out_features, activation, lr_multiplier / math.sqrt(in_features), lr_multiplier)


def _mapping(d: StemDesign, num_ws: int) -> MappingConfig:
    conditional = d.c_dim > 0
    widths = [d.z_dim * (2 if conditional else 1)] + [d.w_dim] * d.mapping_layers
    return MappingConfig(
        z_dim=d.z_dim, c_dim=d.c_dim, w_dim=d.w_dim, num_ws=num_ws, embed_rows=d.embed_rows, embed_dim=d.embed_dim,
        embed_proj=_fc(d.embed_dim, d.z_dim, "lrelu") if conditional else None,
        layers=tuple(_fc(a, b, "lrelu", 0.01) for a, b in zip(widths[:-1], widths[1:])),
        per_class_w_avg=conditional,
    )


def _schedule(d: StemDesign) -> dict[str, np.ndarray]:
    """Per index i = 0..num_layers: cutoff, stopband, sampling rate, half width, size, channels."""
    n, r = d.num_layers, d.img_resolution
    e = np.minimum(np.arange(n + 1) / (n - d.num_critical), 1)
    cutoffs = d.first_cutoff * (r / 2 / d.first_cutoff) ** e
    stopbands = d.first_stopband * (r / 2 * d.last_stopband_rel / d.first_stopband) ** e
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, r))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + d.margin_size * 2
    sizes[-2:] = r
    channels = np.rint(np.minimum((d.channel_base / 2) / cutoffs, d.channel_max))
    channels[-1] = d.img_channels
    return dict(cutoff=cutoffs, stopband=stopbands, rate=rates, half_width=half_widths, size=sizes, channels=channels)


def _layer(d: StemDesign, s: dict[str, np.ndarray], i: int) -> LayerSpec:
    a, b = max(i - 1, 0), i
    is_torgb = i == d.num_layers
    in_rate, out_rate = float(s["rate"][a]), float(s["rate"][b])
    tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else d.lrelu_upsampling)
    up, down = round(tmp_rate / in_rate), round(tmp_rate / out_rate)
    up_taps = d.filter_size * up if up > 1 and not is_torgb else 1
    down_taps = d.filter_size * down if down > 1 and not is_torgb else 1
    kernel = 1 if is_torgb else d.conv_kernel
    in_size, out_size = int(s["size"][a]), int(s["size"][b])
    pad_total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
    lo = (pad_total + up) // 2
    in_ch, out_ch = int(s["channels"][a]), int(s["channels"][b])
    return LayerSpec(
        name=f"L{i}_{out_size}_{out_ch}", w_dim=d.w_dim, is_torgb=is_torgb,
        is_critically_sampled=i >= d.num_layers - d.num_critical,
        use_fp16=bool(out_rate * 2**d.num_fp16_res > d.img_resolution),
        in_channels=in_ch, out_channels=out_ch, in_size=(in_size, in_size), out_size=(out_size, out_size),
        in_sampling_rate=in_rate, out_sampling_rate=out_rate, tmp_sampling_rate=tmp_rate,
        in_cutoff=float(s["cutoff"][a]), out_cutoff=float(s["cutoff"][b]),
        in_half_width=float(s["half_width"][a]), out_half_width=float(s["half_width"][b]),
        up_factor=up, down_factor=down, up_taps=up_taps, down_taps=down_taps,
        padding=(lo, pad_total - lo, lo, pad_total - lo), conv_kernel=kernel, conv_clamp=d.conv_clamp,
        affine=_fc(d.w_dim, in_ch, "linear"),
    )


def stem_config(design: StemDesign) -> GeneratorConfig:
    """The generator configuration a stem with these hyper-parameters has."""
    s = _schedule(design)
    layers = tuple(_layer(design, s, i) for i in range(design.num_layers + 1))
    size = int(s["size"][0])
    synthesis = SynthesisConfig(
        w_dim=design.w_dim, num_ws=len(layers) + 1, img_resolution=design.img_resolution,
        img_channels=design.img_channels, output_scale=design.output_scale,
        input=InputSpec(design.w_dim, int(s["channels"][0]), (size, size), float(s["rate"][0]),
                        float(s["cutoff"][0]), _fc(design.w_dim, 4, "linear")),
        layers=layers,
    )
    return GeneratorConfig(_mapping(design, synthesis.num_ws), synthesis)
