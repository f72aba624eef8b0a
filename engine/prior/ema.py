"""The exponential moving average of generator weights, with StyleGAN2's half-life in images."""
from __future__ import annotations

import torch
from torch import nn


def ema_beta(batch: int, images_seen: int, half_life_kimg: float, rampup: float) -> float:
    half_life = half_life_kimg * 1000
    if rampup > 0:
        # Early in training the EMA forgets faster, so it is not dragged back to the random init.
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
