"""Filtered leaky ReLU: bias, upsample + low-pass, leaky ReLU with gain and clamp, low-pass + downsample.

    y = upfirdn2d(x + b, fu, up=up, padding=padding, gain=up**2)
    z = clamp(leaky_relu(y, slope) * gain, -clamp, clamp)
    out = upfirdn2d(z, fd, down=down)

`filtered_lrelu_ref` is that sequence of plain ops: the truth, differentiated by autograd, which
keeps every upsampled intermediate alive until backward (gigabytes per image at 148 px).
`filtered_lrelu` computes the same forward inside an autograd Function that keeps only a 2-bit
code per upsampled sample (clamped / negative / positive side, as the CUDA kernel keeps sign
bits). Backward needs nothing else: both filters are linear, so their adjoints are applied to the
incoming gradient, with the code selecting the activation's slope in between. Channels are
processed in blocks so that the transient upsampled tensors stay bounded too.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .upfirdn2d import Padding, upfirdn2d, upfirdn2d_ref, upfirdn2d_transpose

# Upsampled elements per channel block; bounds the transient tensors (~128 MB in float32).
_BLOCK_ELEMENTS = 1 << 25
_CLAMPED, _NEGATIVE, _POSITIVE = 0, 1, 2


def filtered_lrelu_ref(
    x: torch.Tensor,
    b: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    *,
    up: int,
    down: int,
    padding: Padding,
    gain: float,
    slope: float,
    clamp: float | None,
) -> torch.Tensor:
    """Reference path: plain ops, autograd through all of them.

    Args:
        x: [N, C, H, W] input (the modulated convolution's output).
        b: [C] bias.
        fu, fd: 1-D up / down filters, or None for the identity.
        up, down: integer resampling factors.
        padding: (x0, x1, y0, y1) applied after upsampling; negative values crop.
        gain: scale after the activation (sqrt(2) in hidden layers, 1 in ToRGB).
        slope: negative-side slope (0.2; 1 means no nonlinearity).
        clamp: symmetric bound after the gain, or None.
    """
    y = upfirdn2d_ref(x + b.to(x.dtype)[None, :, None, None], fu, up=up, padding=padding, gain=up**2)
    z = F.leaky_relu(y, slope) * gain
    if clamp is not None:
        z = z.clamp(-clamp, clamp)
    return upfirdn2d_ref(z, fd, down=down)


def _activate(y: torch.Tensor, gain: float, slope: float, clamp: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The activation and its derivative code (one uint8 per element, before packing)."""
    z = F.leaky_relu(y, slope) * gain
    code = (y > 0).to(torch.uint8) + _NEGATIVE
    if clamp is not None:
        # torch.clamp passes the gradient on the boundary itself; only strictly outside is cut.
        code.masked_fill_(z.abs() > clamp, _CLAMPED)
        z = z.clamp(-clamp, clamp)
    return z, code


def _pack(code: torch.Tensor) -> torch.Tensor:
    """Four 2-bit codes per byte along the last dimension."""
    code = F.pad(code, [0, (-code.shape[-1]) % 4]).unflatten(-1, (-1, 4))
    return code[..., 0] | code[..., 1] << 2 | code[..., 2] << 4 | code[..., 3] << 6


def _unpack(packed: torch.Tensor, width: int) -> torch.Tensor:
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & 3).flatten(-2)[..., :width]


def _slope_of(code: torch.Tensor, gain: float, slope: float, dtype: torch.dtype) -> torch.Tensor:
    table = torch.tensor([0.0, slope * gain, gain], dtype=dtype, device=code.device)
    return table[code.long()]


def _channel_blocks(channels: int, elements_per_channel: int) -> list[slice]:
    size = max(1, _BLOCK_ELEMENTS // max(1, elements_per_channel))
    return [slice(c, min(c + size, channels)) for c in range(0, channels, size)]


def _up_size(x: torch.Tensor, fu: torch.Tensor | None, up: int, padding: Padding) -> tuple[int, int]:
    taps = 1 if fu is None else fu.numel()
    x0, x1, y0, y1 = padding
    return x.shape[2] * up + y0 + y1 - taps + 1, x.shape[3] * up + x0 + x1 - taps + 1


class _FilteredLReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, fu, fd, up, down, padding, gain, slope, clamp):  # noqa: D102 (autograd protocol)
        n, c = x.shape[:2]
        hy, wy = _up_size(x, fu, up, padding)
        codes = torch.empty(n, c, hy, math.ceil(wy / 4), dtype=torch.uint8, device=x.device)
        out = None
        for block in _channel_blocks(c, n * hy * wy):
            y = upfirdn2d(x[:, block] + b[block].to(x.dtype)[None, :, None, None], fu, up=up, padding=padding, gain=up**2)
            z, code = _activate(y, gain, slope, clamp)
            codes[:, block] = _pack(code)
            o = upfirdn2d(z, fd, down=down)
            out = out if out is not None else x.new_empty(n, c, *o.shape[2:])
            out[:, block] = o
        ctx.save_for_backward(codes, fu, fd)
        ctx.config = (tuple(x.shape[2:]), (hy, wy), up, down, padding, gain, slope)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102 (autograd protocol)
        codes, fu, fd = ctx.saved_tensors
        x_size, y_size, up, down, padding, gain, slope = ctx.config
        n, c = grad.shape[:2]
        grad_x = grad.new_empty(n, c, *x_size)
        for block in _channel_blocks(c, n * y_size[0] * y_size[1]):
            gz = upfirdn2d_transpose(grad[:, block], fd, y_size, down=down)
            gy = gz * _slope_of(_unpack(codes[:, block], y_size[1]), gain, slope, gz.dtype)
            grad_x[:, block] = upfirdn2d_transpose(gy, fu, x_size, up=up, padding=padding, gain=up**2)
        grad_b = grad_x.sum(dim=[0, 2, 3]).to(grad.dtype) if ctx.needs_input_grad[1] else None
        return grad_x if ctx.needs_input_grad[0] else None, grad_b, None, None, None, None, None, None, None, None


def _forward_only(x, b, fu, fd, up, down, padding, gain, slope, clamp) -> torch.Tensor:
    """Blocked forward without a graph (nothing needs a gradient)."""
    n, c = x.shape[:2]
    hy, wy = _up_size(x, fu, up, padding)
    out = None
    for block in _channel_blocks(c, n * hy * wy):
        y = upfirdn2d(x[:, block] + b[block].to(x.dtype)[None, :, None, None], fu, up=up, padding=padding, gain=up**2)
        z = F.leaky_relu(y, slope) * gain
        z = z.clamp(-clamp, clamp) if clamp is not None else z
        o = upfirdn2d(z, fd, down=down)
        out = out if out is not None else x.new_empty(n, c, *o.shape[2:])
        out[:, block] = o
    return out


def filtered_lrelu(
    x: torch.Tensor,
    b: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    *,
    up: int,
    down: int,
    padding: Padding,
    gain: float,
    slope: float,
    clamp: float | None,
) -> torch.Tensor:
    """Memory-saving filtered leaky ReLU; same arguments and result as `filtered_lrelu_ref`.

    Gradients flow to `x` and `b`; the filters are constants.
    """
    if x.ndim != 4 or b.shape != (x.shape[1],):
        raise ValueError(f"filtered_lrelu: x {list(x.shape)} and bias {list(b.shape)} disagree")
    args = (x, b, fu, fd, up, down, tuple(padding), float(gain), float(slope), clamp)
    if torch.is_grad_enabled() and (x.requires_grad or b.requires_grad):
        return _FilteredLReLU.apply(*args)
    return _forward_only(*args)
