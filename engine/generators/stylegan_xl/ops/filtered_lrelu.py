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

# Upsampled elements per channel block. Besides bounding the transient tensors, blocks of ~8 MB
# stay below glibc's mmap threshold: larger ones are page-faulted afresh on every allocation,
# which made the whole op 3-5x slower on CPU (measured).
_BLOCK_ELEMENTS = 1 << 21


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


def _pre_activation(x: torch.Tensor, b: torch.Tensor, fu: torch.Tensor | None, up: int, padding: Padding, gain: float) -> torch.Tensor:
    # The activation gain is folded into the (linear) up filter: leaky_relu(g*y) = g*leaky_relu(y), g > 0.
    return upfirdn2d(x + b.to(x.dtype)[None, :, None, None], fu, up=up, padding=padding, gain=up**2 * gain)


def _derivative_code(z: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """From the activated, not yet clamped values: bit 0 = the gradient passes the clamp, bit 1 = positive side.

    A positive slope keeps the sign, so z > 0 exactly where the pre-activation is.
    """
    code = (z > 0).to(torch.uint8) * 2 + 1
    if clamp is not None:
        code.masked_fill_(z.abs() > clamp, 0)  # torch.clamp passes the gradient on the bound itself
    return code


def _pack(code: torch.Tensor) -> torch.Tensor:
    """Four 2-bit codes per byte along the last dimension."""
    code = F.pad(code, [0, (-code.shape[-1]) % 4]).unflatten(-1, (-1, 4))
    return code[..., 0] | code[..., 1] << 2 | code[..., 2] << 4 | code[..., 3] << 6


def _unpack(packed: torch.Tensor, width: int) -> torch.Tensor:
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & 3).flatten(-2)[..., :width]


def _local_slope(code: torch.Tensor, slope: float, dtype: torch.dtype) -> torch.Tensor:
    """d activation / d (gain-scaled pre-activation): 1, slope or 0 (clamped)."""
    passes = (code & 1).to(dtype)
    return passes * (slope + (1 - slope) * (code >> 1).to(dtype))


def _channel_blocks(channels: int, elements_per_channel: int) -> list[slice]:
    size = max(1, _BLOCK_ELEMENTS // max(1, elements_per_channel))
    return [slice(c, min(c + size, channels)) for c in range(0, channels, size)]


def _up_size(x: torch.Tensor, fu: torch.Tensor | None, up: int, padding: Padding) -> tuple[int, int]:
    taps = 1 if fu is None else fu.numel()
    x0, x1, y0, y1 = padding
    return x.shape[2] * up + y0 + y1 - taps + 1, x.shape[3] * up + x0 + x1 - taps + 1


def _blocked_forward(x, b, fu, fd, up, down, padding, gain, slope, clamp, codes) -> torch.Tensor:
    """The forward, channel block by channel block; fills `codes` (packed) when it is given."""
    n, c = x.shape[:2]
    hy, wy = _up_size(x, fu, up, padding)
    out = None
    for block in _channel_blocks(c, n * hy * wy):
        z = _pre_activation(x[:, block], b[block], fu, up, padding, gain)
        z = F.leaky_relu_(z, slope) if slope != 1 else z
        if codes is not None:
            codes[:, block] = _pack(_derivative_code(z, clamp))
        z = z.clamp_(-clamp, clamp) if clamp is not None else z
        o = upfirdn2d(z, fd, down=down)
        out = out if out is not None else x.new_empty(n, c, *o.shape[2:])
        out[:, block] = o
    return out


class _FilteredLReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, fu, fd, up, down, padding, gain, slope, clamp):  # noqa: D102 (autograd protocol)
        hy, wy = _up_size(x, fu, up, padding)
        codes = torch.empty(*x.shape[:2], hy, math.ceil(wy / 4), dtype=torch.uint8, device=x.device)
        out = _blocked_forward(x, b, fu, fd, up, down, padding, gain, slope, clamp, codes)
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
            gy = upfirdn2d_transpose(grad[:, block], fd, y_size, down=down)
            gy *= _local_slope(_unpack(codes[:, block], y_size[1]), slope, gy.dtype)
            grad_x[:, block] = upfirdn2d_transpose(gy, fu, x_size, up=up, padding=padding, gain=up**2 * gain)
        grad_b = grad_x.sum(dim=[0, 2, 3]).to(grad.dtype) if ctx.needs_input_grad[1] else None
        return grad_x if ctx.needs_input_grad[0] else None, grad_b, None, None, None, None, None, None, None, None


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
    return _blocked_forward(*args, codes=None)
