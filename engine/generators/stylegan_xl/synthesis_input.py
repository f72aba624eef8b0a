"""Fourier-feature input of the synthesis network, rotated and translated per sample by ws[:, 0]."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import InputSpec
from .fully_connected import FullyConnectedLayer


class SynthesisInput(nn.Module):
    """[N, w_dim] -> [N, channels, H, W] band-limited sinusoids mixed by a learned channel matrix.

    The frequencies and phases are random at training time and part of the model: they are
    buffers loaded from the checkpoint, never redrawn.
    """

    def __init__(self, spec: InputSpec):
        super().__init__()
        self.spec = spec
        c = spec.channels
        self.weight = nn.Parameter(torch.empty(c, c))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", torch.empty(c, 2))
        self.register_buffer("phases", torch.empty(c))
        self.affine = FullyConnectedLayer(spec.affine)

    def _transform(self, w: torch.Tensor) -> torch.Tensor:
        """Per-sample 3x3 matrix: rotation by (r_c, r_s), then translation by -(t_x, t_y), then `transform`."""
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rc, rs, tx, ty = t.unbind(dim=1)
        zero, one = torch.zeros_like(rc), torch.ones_like(rc)
        rotation = torch.stack([rc, -rs, zero, rs, rc, zero, zero, zero, one], dim=1).view(-1, 3, 3)
        translation = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], dim=1).view(-1, 3, 3)
        return rotation @ translation @ self.transform.unsqueeze(0)

    def _grid(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample positions (in units of the sampling period) of pixel centres, x along W and y along H."""
        (w, h), s = self.spec.size, self.spec.sampling_rate
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5 - w / 2) / s
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5 - h / 2) / s
        return x, y

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        t = self._transform(w.float())
        # The phase shift uses the untransformed frequencies; then the frequencies are transformed.
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ t[:, :2, 2:]).squeeze(2)
        freqs = self.freqs.unsqueeze(0) @ t[:, :2, :2]  # [N, C, 2]
        # Fade out frequencies above the bandwidth so the input stays band-limited after rotation.
        amplitudes = (1 - (freqs.norm(dim=2) - spec.bandwidth) / (spec.sampling_rate / 2 - spec.bandwidth)).clamp(0, 1)
        gx, gy = self._grid(w.device)
        arg = gy[None, :, None, None] * freqs[:, None, None, :, 1] + gx[None, None, :, None] * freqs[:, None, None, :, 0]
        x = torch.sin((arg + phases[:, None, None, :]) * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(spec.channels)).t()
        x = x.permute(0, 3, 1, 2)
        assert x.shape == (w.shape[0], *spec.shape)
        return x

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        c = self.spec.channels
        self.weight.copy_(torch.randn(c, c, generator=generator))
        self.affine.reset_parameters(generator, weight_init=0.0, bias_init=[1.0, 0.0, 0.0, 0.0])
        self.transform.copy_(torch.eye(3))
        # Random directions with radii falling off like exp(-r^2 / 4), scaled to the bandwidth.
        freqs = torch.randn(c, 2, generator=generator)
        radii = freqs.norm(dim=1, keepdim=True)
        self.freqs.copy_(freqs / (radii * radii.square().exp().pow(0.25)) * self.spec.bandwidth)
        self.phases.copy_(torch.rand(c, generator=generator) - 0.5)
