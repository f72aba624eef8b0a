"""Modulated convolution of a StyleGAN3 synthesis layer (style-scaled, optionally demodulated).

Per sample n: Wm[n,o,i] = W[o,i] * s[n,i]; if demodulating, Wm[n,o] is divided by its L2 norm
(+1e-8 inside the root); the result is scaled by `input_gain` and applied as a "full" convolution
(padding k-1). Before that, W is normalised per output channel and s by its RMS over the whole
batch: both cancel under demodulation up to the epsilon, and they keep float16 from overflowing.

`modulated_conv2d_ref` builds Wm per sample and runs one grouped convolution: the truth.
`modulated_conv2d` moves the per-sample factors onto the activations (scale the input by s, one
shared-weight convolution, scale the output by the demodulation factor), which is the same
linear map but one ordinary convolution for the whole batch and no [N, O, I, k, k] tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _normalised(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not demodulate:
        return weight, styles
    weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
    styles = styles * styles.square().mean().rsqrt()
    return weight, styles


def _check(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor) -> None:
    n, i = x.shape[:2]
    if weight.ndim != 4 or weight.shape[1] != i or tuple(styles.shape) != (n, i):
        raise ValueError(
            f"modulated_conv2d: x {list(x.shape)}, weight {list(weight.shape)}, styles {list(styles.shape)} disagree"
        )


def modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, input_gain: torch.Tensor | float
) -> torch.Tensor:
    """Modulated "full" convolution (the fast form).

    Args:
        x: [N, I, H, W] activations.
        weight: [O, I, k, k] shared weight.
        styles: [N, I] per-sample input-channel scales (float32).
        demodulate: normalise each sample's effective weight per output channel.
        input_gain: scalar multiplying the output (1/sqrt(magnitude_ema) in the layers).

    Returns:
        [N, O, H + k - 1, W + k - 1] in the dtype of `x`.
    """
    _check(x, weight, styles)
    weight, styles = _normalised(weight.float(), styles.float(), demodulate)
    k = weight.shape[-1]
    x = x * (styles * input_gain).to(x.dtype)[:, :, None, None]
    y = F.conv2d(x, weight.to(x.dtype), padding=k - 1)
    if demodulate:
        # sum_{i,kh,kw} (W[o,i] s[n,i])^2 = sum_i s[n,i]^2 * sum_{kh,kw} W[o,i]^2
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
        y = y * dcoefs.to(y.dtype)[:, :, None, None]
    return y


def modulated_conv2d_ref(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, input_gain: torch.Tensor | float
) -> torch.Tensor:
    """The literal per-sample weights and one grouped convolution (reference path)."""
    _check(x, weight, styles)
    n, i, h, w = x.shape
    weight, styles = _normalised(weight.float(), styles.float(), demodulate)
    o, _, k, _ = weight.shape
    wm = weight.unsqueeze(0) * styles[:, None, :, None, None]
    if demodulate:
        wm = wm * (wm.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    wm = (wm * input_gain).to(x.dtype)
    y = F.conv2d(x.reshape(1, n * i, h, w), wm.reshape(n * o, i, k, k), padding=k - 1, groups=n)
    return y.reshape(n, o, h + k - 1, w + k - 1)
