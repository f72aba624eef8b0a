"""upfirdn2d: upsample by zero insertion, pad (or crop), FIR-filter, downsample.

Per channel and per axis: put each sample at position k*up (zeros between), pad with zeros
(negative amounts crop), filter in "valid" mode with a true convolution (the filter is flipped
unless `flip_filter`), keep every `down`-th sample. Filters are 1-D and applied separably, width
first, each pass with f*sqrt(gain) so the total gain is `gain`. `f=None` is the identity filter.

`upfirdn2d_ref` spells the definition out literally and is the truth. `upfirdn2d` computes the
same numbers with less work: each axis is done in its own pass (zero insertion along H commutes
with filtering along W), upsampling runs as a transposed convolution so inserted zeros are never
multiplied, and downsampling as a strided convolution so dropped samples are never computed.
`upfirdn2d_transpose` is the adjoint, used by hand-written backward passes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Padding = tuple[int, int, int, int]  # x0, x1, y0, y1


def _check_args(x: torch.Tensor, f: torch.Tensor | None, up: int, down: int, padding: Padding) -> None:
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects NCHW input, got shape {list(x.shape)}")
    if f is not None and f.ndim != 1:
        raise ValueError(f"only separable (1-D) filters are supported, got a {f.ndim}-D filter")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    if len(padding) != 4:
        raise ValueError(f"padding must be (x0, x1, y0, y1), got {padding}")


def _zero_insert(x: torch.Tensor, up: int, dim: int) -> torch.Tensor:
    """Sample k goes to position k*up along `dim` (2 or 3); up-1 zeros follow it."""
    if up == 1:
        return x
    x = F.pad(x.unsqueeze(dim + 1), _pad_spec_for(x.ndim + 1, dim + 1, 0, up - 1))
    shape = list(x.shape)
    shape[dim : dim + 2] = [shape[dim] * up]
    return x.reshape(shape)


def _pad_spec_for(ndim: int, dim: int, lo: int, hi: int) -> list[int]:
    """The F.pad argument that pads only `dim` by (lo, hi)."""
    spec = [0, 0] * (ndim - dim)
    spec[-2:] = [lo, hi]
    return spec


def _depthwise(taps: torch.Tensor, channels: int, dim: int) -> torch.Tensor:
    """A [C, 1, kh, kw] weight applying the 1-D `taps` along `dim` (2 = H, 3 = W) in every channel."""
    shape = (1, 1, 1, -1) if dim == 3 else (1, 1, -1, 1)
    return taps.view(shape).expand(channels, 1, *taps.view(shape).shape[2:])


def _stride(factor: int, dim: int) -> tuple[int, int]:
    return (1, factor) if dim == 3 else (factor, 1)


def _axis_pass(
    x: torch.Tensor, f: torch.Tensor | None, up: int, down: int, lo: int, hi: int, dim: int, flip: bool, gain: float
) -> torch.Tensor:
    """One axis of upfirdn2d on `dim` (2 = H, 3 = W) without computing samples that are zero or dropped."""
    keep = (slice(None),) * dim + (slice(None, None, down),)
    if f is None:
        x = F.pad(_zero_insert(x, up, dim), _pad_spec_for(x.ndim, dim, lo, hi))
        return (x * gain if gain != 1 else x)[keep]
    taps = (f.flip(0) if flip else f) * gain  # as a true-convolution kernel
    weight = _depthwise(taps.to(x.dtype), x.shape[1], dim)
    if up == 1:
        x = F.pad(x, _pad_spec_for(x.ndim, dim, lo, hi))
        return F.conv2d(x, weight.flip(dim), stride=_stride(down, dim), groups=x.shape[1])
    # Transposed convolution = zero insertion followed by a full convolution, skipping the zeros.
    # The full result starts taps-1 samples before the padded, valid-filtered one.
    x = F.conv_transpose2d(x, weight, stride=_stride(up, dim), groups=x.shape[1])
    t = f.numel()
    x = F.pad(x, _pad_spec_for(x.ndim, dim, lo - t + 1, hi - t + up))
    return x[keep]


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: Padding = (0, 0, 0, 0),
    gain: float = 1.0,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Upsample, pad, filter, downsample (see the module docstring).

    Args:
        x: [N, C, H, W] input.
        f: 1-D filter, or None for the identity.
        up, down: integer factors, the same on both axes.
        padding: (x0, x1, y0, y1) zeros added after upsampling; negative values crop.
        gain: overall gain of the filter.
        flip_filter: correlate instead of convolve.

    Returns:
        [N, C, H', W'] with W' = (W*up + x0 + x1 - (taps - 1) + down - 1) // down, likewise H'.
    """
    _check_args(x, f, up, down, padding)
    x0, x1, y0, y1 = padding
    axis_gain = math.sqrt(gain)
    x = _axis_pass(x, f, up, down, x0, x1, 3, flip_filter, axis_gain)
    return _axis_pass(x, f, up, down, y0, y1, 2, flip_filter, axis_gain)


def upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: Padding = (0, 0, 0, 0),
    gain: float = 1.0,
    flip_filter: bool = False,
) -> torch.Tensor:
    """The literal definition: 2-D zero insertion, pad, full-rate separable filter, then slicing."""
    _check_args(x, f, up, down, padding)
    n, c, h, w = x.shape
    x0, x1, y0, y1 = padding
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
    x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [x0, x1, y0, y1])
    if f is not None:
        taps = (f if flip_filter else f.flip(0)) * math.sqrt(gain)
        taps = taps.to(x.dtype)
        x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        x = F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    elif gain != 1:
        x = x * gain
    return x[:, :, ::down, ::down]


def _transpose_padding(in_len: int, out_len: int, taps: int, up: int, down: int, lo: int, hi: int) -> tuple[int, int]:
    """Padding of the adjoint pass along one axis (see upfirdn2d_transpose)."""
    filtered_len = in_len * up + lo + hi - taps + 1
    # Zero insertion by `down` yields out_len*down samples; the forward kept filtered_len of them.
    extra = filtered_len - out_len * down
    return taps - 1 - lo, taps - 1 + extra - hi


def upfirdn2d_transpose(
    g: torch.Tensor,
    f: torch.Tensor | None,
    in_size: tuple[int, int],
    up: int = 1,
    down: int = 1,
    padding: Padding = (0, 0, 0, 0),
    gain: float = 1.0,
    flip_filter: bool = False,
) -> torch.Tensor:
    """The adjoint of `upfirdn2d(., f, up, down, padding, gain, flip_filter)` applied to `g`.

    It is itself an upfirdn2d with up and down swapped and the filter flipped: the vector-Jacobian
    product of a linear op, computed without autograd's saved intermediates.

    Args:
        g: [N, C, H', W'], shaped like the forward op's output.
        in_size: (H, W) of the forward op's input.
    """
    taps = 1 if f is None else f.numel()
    x0, x1, y0, y1 = padding
    px = _transpose_padding(in_size[1], g.shape[3], taps, up, down, x0, x1)
    py = _transpose_padding(in_size[0], g.shape[2], taps, up, down, y0, y1)
    out = upfirdn2d(g, f, up=down, down=up, padding=(*px, *py), gain=gain, flip_filter=not flip_filter)
    assert out.shape[2:] == tuple(in_size), f"adjoint produced {list(out.shape)}, expected spatial {in_size}"
    return out
