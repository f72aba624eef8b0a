"""The input/output contract every network in the zoo is built for."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NetSpec:
    """Images of `channels` x `resolution` x `resolution` in, `num_classes` logits out.

    Resolutions are powers of two >= 32: every architecture here halves the map several times
    and the 32 px (CIFAR) variants assume it.
    """

    channels: int
    num_classes: int
    resolution: int

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        r = self.resolution
        if r < 32 or r & (r - 1):
            raise ValueError(f"resolution must be a power of two >= 32, got {r}")

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a readable error instead of a shape mismatch deep inside a layer."""
        expected = (self.channels, self.resolution, self.resolution)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images of shape [N, {', '.join(map(str, expected))}], got {list(x.shape)}")
