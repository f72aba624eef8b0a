"""Frozen, validated descriptions of a StyleGAN-XL generator: what a checkpoint stores, nothing more.

A configuration is read from a checkpoint's stored attributes (`checkpoint.py`) or designed from
the stem formulas (`stem.py`); the modules are built from it. Validation catches checkpoints whose
attributes do not describe a working network (an unknown architecture) before any tensor moves.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ops.activations import ACTIVATIONS


@dataclass(frozen=True)
class FullyConnectedSpec:
    """y = activation(x @ (W * weight_gain)^T + b * bias_gain)."""

    in_features: int
    out_features: int
    activation: str
    weight_gain: float
    bias_gain: float

    def __post_init__(self) -> None:
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(f"fully connected layer needs positive sizes, got {self.in_features}->{self.out_features}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid names: {', '.join(sorted(ACTIVATIONS))}")


@dataclass(frozen=True)
class MappingConfig:
    """z (+ class embedding) -> w, broadcast to num_ws rows."""

    z_dim: int
    c_dim: int
    w_dim: int
    num_ws: int
    embed_rows: int  # the class embedding table; 1000 rows in released models, whatever c_dim is
    embed_dim: int
    embed_proj: FullyConnectedSpec | None  # None in unconditional models
    layers: tuple[FullyConnectedSpec, ...]
    per_class_w_avg: bool  # w_avg is [c_dim, w_dim] (released models) or [w_dim]

    def __post_init__(self) -> None:
        if self.conditional != (self.c_dim > 0):
            raise ValueError(f"c_dim {self.c_dim} disagrees with the presence of a class projection")
        if self.conditional:
            proj = self.embed_proj
            if self.c_dim > self.embed_rows or proj.in_features != self.embed_dim or proj.out_features != self.z_dim:
                raise ValueError(f"class projection {proj} does not map a {self.embed_rows}x{self.embed_dim} "
                                 f"embedding of {self.c_dim} classes to z_dim={self.z_dim}")
        if not self.layers:
            raise ValueError("the mapping network needs at least one fully connected layer")
        widths = [self.z_dim * (2 if self.conditional else 1)] + [s.out_features for s in self.layers]
        if [s.in_features for s in self.layers] != widths[:-1] or widths[-1] != self.w_dim:
            raise ValueError(f"mapping layers {[(s.in_features, s.out_features) for s in self.layers]} do not chain "
                             f"from {widths[0]} inputs to w_dim={self.w_dim}")
        if self.per_class_w_avg and not self.conditional:
            raise ValueError("a per-class w_avg needs a conditional mapping")

    @property
    def conditional(self) -> bool:
        return self.embed_proj is not None


@dataclass(frozen=True)
class InputSpec:
    """Fourier-feature input layer: `channels` features on a size[0] x size[1] (W x H) grid."""

    w_dim: int
    channels: int
    size: tuple[int, int]
    sampling_rate: float
    bandwidth: float
    affine: FullyConnectedSpec

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"input size must be (W, H) > 0, got {self.size}")
        if (self.affine.in_features, self.affine.out_features) != (self.w_dim, 4):
            raise ValueError(f"input affine must map w_dim={self.w_dim} -> 4, got {self.affine}")
        if not 0 <= self.bandwidth < self.sampling_rate / 2:
            raise ValueError(f"bandwidth {self.bandwidth} must lie below half the sampling rate {self.sampling_rate}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.size[1], self.size[0]


@dataclass(frozen=True)
class LayerSpec:
    """One StyleGAN3-T synthesis layer: modulated conv, then the filtered leaky ReLU.

    Sizes are (W, H) as checkpoints store them; padding is (x0, x1, y0, y1) after upsampling.
    Cutoffs, half widths and rates describe the filters; they only matter to validate them.
    """

    name: str
    w_dim: int
    is_torgb: bool
    is_critically_sampled: bool
    use_fp16: bool
    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    in_sampling_rate: float
    out_sampling_rate: float
    tmp_sampling_rate: float
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    padding: tuple[int, int, int, int]
    conv_kernel: int
    conv_clamp: float | None
    affine: FullyConnectedSpec

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"layer name {self.name!r} is not a valid attribute name")
        if len(self.padding) != 4 or len(self.in_size) != 2 or len(self.out_size) != 2:
            raise ValueError(f"{self.name}: padding must have 4 entries and sizes 2, got {self.padding}, {self.in_size}, {self.out_size}")
        if self.up_factor < 1 or self.down_factor < 1 or self.conv_kernel < 1:
            raise ValueError(f"{self.name}: factors and kernel must be >= 1")
        for taps, factor, which in ((self.up_taps, self.up_factor, "up"), (self.down_taps, self.down_factor, "down")):
            if (taps > 1) != (factor > 1 and not self.is_torgb):
                raise ValueError(f"{self.name}: {which}_taps={taps} does not fit {which}_factor={factor}, is_torgb={self.is_torgb}")
        if (self.affine.in_features, self.affine.out_features) != (self.w_dim, self.in_channels):
            raise ValueError(f"{self.name}: affine must map w_dim={self.w_dim} -> {self.in_channels}, got {self.affine}")
        if self.conv_clamp is not None and self.conv_clamp <= 0:
            raise ValueError(f"{self.name}: conv_clamp must be positive or None, got {self.conv_clamp}")
        computed = self.computed_out_size()
        if computed != tuple(self.out_size):
            raise ValueError(f"{self.name}: padding {self.padding} gives output {computed}, but out_size is {self.out_size}")

    def computed_out_size(self) -> tuple[int, int]:
        """(W, H) that conv + filtered leaky ReLU produce from in_size with this padding."""
        out = []
        for axis, (lo, hi) in enumerate((self.padding[:2], self.padding[2:])):
            conv = self.in_size[axis] + self.conv_kernel - 1
            length = conv * self.up_factor + lo + hi - (self.up_taps - 1) - (self.down_taps - 1)
            out.append((length + self.down_factor - 1) // self.down_factor)
        return out[0], out[1]

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return self.in_channels, self.in_size[1], self.in_size[0]

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.out_channels, self.out_size[1], self.out_size[0]


@dataclass(frozen=True)
class SynthesisConfig:
    """Input layer, then `layers` in order (position = index; names need not be contiguous)."""

    w_dim: int
    num_ws: int
    img_resolution: int
    img_channels: int
    output_scale: float
    input: InputSpec
    layers: tuple[LayerSpec, ...]

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("a synthesis network needs at least one layer")
        if self.num_ws != len(self.layers) + 1:
            raise ValueError(f"num_ws={self.num_ws} but there are {len(self.layers)} layers (expected layers + 1)")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names) or "input" in names:
            raise ValueError(f"layer names must be unique and not 'input': {names}")
        shapes = [self.input.shape] + [layer.out_shape for layer in self.layers[:-1]]
        for layer, shape in zip(self.layers, shapes):
            if layer.in_shape != shape:
                raise ValueError(f"{layer.name} expects input {layer.in_shape}, but receives {shape}")
            if layer.w_dim != self.w_dim:
                raise ValueError(f"{layer.name} has w_dim {layer.w_dim}, the network {self.w_dim}")
        if [layer.is_torgb for layer in self.layers] != [False] * (len(self.layers) - 1) + [True]:
            raise ValueError("exactly the last layer must be ToRGB")
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if self.layers[-1].out_shape != expected:
            raise ValueError(f"the last layer outputs {self.layers[-1].out_shape}, expected an image {expected}")


@dataclass(frozen=True)
class GeneratorConfig:
    mapping: MappingConfig
    synthesis: SynthesisConfig

    def __post_init__(self) -> None:
        if self.mapping.w_dim != self.synthesis.w_dim or self.mapping.num_ws != self.synthesis.num_ws:
            raise ValueError(
                f"mapping (w_dim {self.mapping.w_dim}, num_ws {self.mapping.num_ws}) and synthesis "
                f"(w_dim {self.synthesis.w_dim}, num_ws {self.synthesis.num_ws}) disagree"
            )


@dataclass(frozen=True)
class ExecutionOptions:
    """How to run a generator, chosen once at construction.

    fp16_on_cuda: on CUDA, run the layers whose checkpoint flag `use_fp16` is set in float16, as the
        authors' code does (features then come out in float16). CPU always runs float32.
    memory_saving: use filtered_lrelu's own backward (2-bit codes) instead of autograd through the
        plain reference ops. Same numbers; the reference keeps every upsampled intermediate.
    """

    fp16_on_cuda: bool = False
    memory_saving: bool = True

