"""Activations of the fully connected layers, by the names checkpoints store."""
from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType

import torch
import torch.nn.functional as F


def _linear(x: torch.Tensor) -> torch.Tensor:
    return x


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    # Leaky ReLU scaled by sqrt(2) keeps unit variance for unit-variance inputs.
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


ACTIVATIONS: MappingProxyType[str, Callable[[torch.Tensor], torch.Tensor]] = MappingProxyType(
    {"linear": _linear, "lrelu": _lrelu}
)


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation called `name`; raises ValueError naming the valid ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid names: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]
