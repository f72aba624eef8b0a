"""Kaiser-windowed low-pass FIR design for the filtered leaky ReLU's up/down filters.

Checkpoints store their filters, and those are what runs. This design is used to build random
configurations and to check that stored filters are the ones their layer attributes describe.
"""
from __future__ import annotations

import math

import torch


def kaiser_beta(numtaps: int, width: float, fs: float) -> float:
    """Kaiser's empirical beta for a transition band `width` (Hz) at sampling rate `fs`."""
    attenuation = 2.285 * (numtaps - 1) * math.pi * (width / (fs / 2)) + 7.95
    if attenuation > 50:
        return 0.1102 * (attenuation - 8.7)
    if attenuation > 21:
        return 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    return 0.0


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor | None:
    """A 1-D float32 low-pass FIR with unit DC gain; None for a single tap (the identity).

    Args:
        numtaps: filter length.
        cutoff: cutoff frequency, in the same units as `fs`.
        width: transition band width (twice the layer's half width).
        fs: sampling rate the filter runs at (the layer's temporary rate).
    """
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    band = cutoff / (fs / 2)
    m = torch.arange(numtaps, dtype=torch.float64) - (numtaps - 1) / 2
    window = torch.kaiser_window(numtaps, periodic=False, beta=kaiser_beta(numtaps, width, fs), dtype=torch.float64)
    h = band * torch.sinc(band * m) * window
    return (h / h.sum()).float()
