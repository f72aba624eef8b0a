"""Differentiable siamese augmentation (DSA) with parameters drawn from an explicit generator.

Each call picks one op group from the strategy (mode "S") and draws its parameters.
A siamese draw holds one parameter set that is applied to every sample of every
batch it meets, so the real and the synthetic batch see the same transformation
whatever their sizes.  A per-sample draw holds one parameter set per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass(frozen=True)
class DSAParams:
    """Augmentation strengths (DC/DSA `ParamDiffAug` values) and the op strategy."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2  # scale factors in [1/r, r]
    ratio_rotate: float = 15.0  # degrees, angle in [-r, r]
    ratio_crop_pad: float = 0.125  # max integer shift = int(r * size + 0.5)
    ratio_cutout: float = 0.5  # square side = int(r * size + 0.5)
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    strategy: str = DEFAULT_STRATEGY

    def __post_init__(self) -> None:
        unknown = [t for t in self.strategy.split("_") if t not in _OPS]
        if unknown:
            raise ValueError(f"unknown DSA strategy token(s) {unknown} in {self.strategy!r}; valid: {sorted(_OPS)}")
        _check_range("prob_flip", self.prob_flip, 0.0, 1.0)
        _check_range("ratio_crop_pad", self.ratio_crop_pad, 0.0, 1.0)
        _check_range("ratio_cutout", self.ratio_cutout, 0.0, 1.0)
        if self.ratio_scale < 1.0:
            raise ValueError(f"ratio_scale must be >= 1, got {self.ratio_scale}")
        for name in ("ratio_rotate", "brightness", "saturation", "contrast"):
            _check_range(name, getattr(self, name), 0.0, math.inf)

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(self.strategy.split("_"))


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


@dataclass(frozen=True)
class Draw:
    """One drawn op with its parameters.

    Every tensor in `values` has a leading dimension of 1 (siamese: shared by all
    samples) or of the batch size (per-sample).  Keys per op:
    color: shift, saturation, contrast (n,1,1,1 floats, already the final factors);
    crop: dy, dx (n, int shifts, out[h, w] = x[h + dy, w + dx]);
    cutout: top, bottom, left, right (n, int, half-open zeroed box, may reach outside);
    flip: flip (n,1,1,1 bool); scale, rotate: theta (n,2,3 affine matrices).
    """

    op: str
    height: int
    width: int
    values: Mapping[str, Tensor]

    @property
    def shared(self) -> bool:
        return all(v.shape[0] == 1 for v in self.values.values())

    def rows(self, index: Tensor) -> "Draw":
        """The draw of samples `index` of its batch: what a process applies to the part of a minibatch it
        holds, so each image meets the parameters it meets in one process. A shared draw fits any rows."""
        if self.shared:
            return self
        picked = {k: v[index.to(v.device)] for k, v in self.values.items()}
        return Draw(self.op, self.height, self.width, MappingProxyType(picked))


def sample(params: DSAParams, batch: int, height: int, width: int, generator: torch.Generator, siamese: bool) -> Draw:
    """Pick one op group of the strategy and draw its parameters from `generator` (CPU).

    siamese=True draws one parameter set for any batch; otherwise one per sample of `batch`.
    """
    if min(batch, height, width) < 1:
        raise ValueError(f"batch, height and width must be positive, got {batch}, {height}, {width}")
    if generator.device.type != "cpu":
        raise ValueError(f"DSA draws from a CPU generator, got one on {generator.device}")
    tokens = params.tokens
    op = tokens[int(torch.randint(len(tokens), (1,), generator=generator))]
    n = 1 if siamese else batch
    values = _OPS[op].sample(params, n, height, width, generator)
    return Draw(op, height, width, MappingProxyType(values))


def apply(x: Tensor, draw: Draw) -> Tensor:
    """Apply a drawn op to an (N, C, H, W) batch; differentiable with respect to x."""
    if x.dim() != 4 or tuple(x.shape[2:]) != (draw.height, draw.width):
        raise ValueError(f"expected (N, C, {draw.height}, {draw.width}) input, got {tuple(x.shape)}")
    if not draw.shared and any(v.shape[0] != x.shape[0] for v in draw.values.values()):
        raise ValueError(f"per-sample draw does not match batch size {x.shape[0]}")
    return _OPS[draw.op].apply(x, draw.values)


def siamese_pair(real: Tensor, syn: Tensor, params: DSAParams, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Augment a real and a synthetic batch with one shared draw."""
    if real.shape[1:] != syn.shape[1:]:
        raise ValueError(f"real {tuple(real.shape)} and synthetic {tuple(syn.shape)} differ beyond the batch size")
    draw = sample(params, real.shape[0], real.shape[2], real.shape[3], generator, siamese=True)
    return apply(real, draw), apply(syn, draw)


def augment(x: Tensor, params: DSAParams, generator: torch.Generator) -> Tensor:
    """Augment a batch with per-sample parameters (one op group for the whole call)."""
    draw = sample(params, x.shape[0], x.shape[2], x.shape[3], generator, siamese=False)
    return apply(x, draw)


def _uniform(n: int, generator: torch.Generator, *shape: int) -> Tensor:
    return torch.rand((n, *shape), generator=generator)


def _like(value: Tensor, x: Tensor) -> Tensor:
    return value.to(device=x.device, dtype=x.dtype)


# --- color: brightness, saturation, contrast in this order --------------------


def _sample_color(p: DSAParams, n: int, h: int, w: int, g: torch.Generator) -> dict[str, Tensor]:
    return {
        "shift": (_uniform(n, g, 1, 1, 1) - 0.5) * p.brightness,
        "saturation": _uniform(n, g, 1, 1, 1) * p.saturation,
        "contrast": _uniform(n, g, 1, 1, 1) + p.contrast,
    }


def _apply_color(x: Tensor, v: Mapping[str, Tensor]) -> Tensor:
    x = x + _like(v["shift"], x)
    # With one channel the pixel is its own channel mean, so saturation is the identity.
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _like(v["saturation"], x) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _like(v["contrast"], x) + mean


# --- crop: integer translation with zero fill ----------------------------------


def _sample_crop(p: DSAParams, n: int, h: int, w: int, g: torch.Generator) -> dict[str, Tensor]:
    sh, sw = int(p.ratio_crop_pad * h + 0.5), int(p.ratio_crop_pad * w + 0.5)
    return {"dy": torch.randint(-sh, sh + 1, (n,), generator=g), "dx": torch.randint(-sw, sw + 1, (n,), generator=g)}


def _apply_crop(x: Tensor, v: Mapping[str, Tensor]) -> Tensor:
    if v["dy"].shape[0] == 1:
        return _shift_shared(x, int(v["dy"]), int(v["dx"]))
    return _shift_along(_shift_along(x, v["dy"], 2), v["dx"], 3)


def _shift_shared(x: Tensor, dy: int, dx: int) -> Tensor:
    # Negative padding drops rows/columns on one side while zeros enter on the other.
    return F.pad(x, (-dx, dx, -dy, dy))


def _shift_along(x: Tensor, shift: Tensor, dim: int) -> Tensor:
    """out[..., i, ...] = x[..., i + shift[n], ...] along `dim`, zero where that falls outside."""
    size = x.shape[dim]
    source = torch.arange(size, device=x.device) + shift.to(x.device).view(-1, 1)
    view = [x.shape[0], 1, 1, 1]
    view[dim] = size
    # The index is expanded (stride 0) over channels and the other axis, so it stays (N, size).
    index = source.clamp(0, size - 1).view(view).expand(x.shape)
    inside = ((source >= 0) & (source < size)).view(view)
    return x.gather(dim, index) * inside.to(x.dtype)


# --- cutout: zero a fixed-size square, clipped at the borders -----------------


def _sample_cutout(p: DSAParams, n: int, h: int, w: int, g: torch.Generator) -> dict[str, Tensor]:
    top, bottom = _cutout_span(p.ratio_cutout, h, n, g)
    left, right = _cutout_span(p.ratio_cutout, w, n, g)
    return {"top": top, "bottom": bottom, "left": left, "right": right}


def _cutout_span(ratio: float, size: int, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    side = int(ratio * size + 0.5)
    # Centre range as in DSA: [0, size] for an even side, [0, size - 1] for an odd one.
    centre = torch.randint(0, size + 1 - side % 2, (n,), generator=g)
    start = centre - side // 2
    return start, start + side


def _apply_cutout(x: Tensor, v: Mapping[str, Tensor]) -> Tensor:
    rows = _inside(v["top"], v["bottom"], x.shape[2], x.device)
    cols = _inside(v["left"], v["right"], x.shape[3], x.device)
    keep = ~(rows[:, None, :, None] & cols[:, None, None, :])
    return x * keep.to(x.dtype)


def _inside(start: Tensor, stop: Tensor, size: int, device: torch.device) -> Tensor:
    pos = torch.arange(size, device=device)
    return (pos >= start.to(device).view(-1, 1)) & (pos < stop.to(device).view(-1, 1))


# --- flip: horizontal mirror ---------------------------------------------------


def _sample_flip(p: DSAParams, n: int, h: int, w: int, g: torch.Generator) -> dict[str, Tensor]:
    return {"flip": _uniform(n, g, 1, 1, 1) < p.prob_flip}


def _apply_flip(x: Tensor, v: Mapping[str, Tensor]) -> Tensor:
    flip = v["flip"]
    if flip.shape[0] == 1:
        return x.flip(3) if bool(flip) else x
    return torch.where(flip.to(x.device), x.flip(3), x)


# --- scale and rotate: one affine grid + bilinear sample ----------------------


def _sample_scale(p: DSAParams, n: int, h: int, w: int, g: torch.Generator) -> dict[str, Tensor]:
    low, high = 1.0 / p.ratio_scale, p.ratio_scale
    sx = _uniform(n, g) * (high - low) + low
    sy = _uniform(n, g) * (high - low) + low
    zero = torch.zeros(n)
    return {"theta": torch.stack([sx, zero, zero, zero, sy, zero], dim=1).view(n, 2, 3)}


def _sample_rotate(p: DSAParams, n: int, h: int, w: int, g: torch.Generator) -> dict[str, Tensor]:
    angle = (_uniform(n, g) - 0.5) * (2.0 * math.radians(p.ratio_rotate))
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros(n)
    return {"theta": torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(n, 2, 3)}


def _apply_affine(x: Tensor, v: Mapping[str, Tensor]) -> Tensor:
    theta = _like(v["theta"], x)
    b, c, h, w = x.shape
    if theta.shape[0] == 1:
        # A shared transform samples every channel of every image through one grid.
        x = x.reshape(1, b * c, h, w)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(b, c, h, w)


class _Op(NamedTuple):
    sample: Callable[[DSAParams, int, int, int, torch.Generator], dict[str, Tensor]]
    apply: Callable[[Tensor, Mapping[str, Tensor]], Tensor]


_OPS: Mapping[str, _Op] = MappingProxyType(
    {
        "color": _Op(_sample_color, _apply_color),
        "crop": _Op(_sample_crop, _apply_crop),
        "cutout": _Op(_sample_cutout, _apply_cutout),
        "flip": _Op(_sample_flip, _apply_flip),
        "scale": _Op(_sample_scale, _apply_affine),
        "rotate": _Op(_sample_rotate, _apply_affine),
    }
)

STRATEGY_TOKENS: tuple[str, ...] = tuple(_OPS)
