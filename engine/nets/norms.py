"""Normalisation layers by name, as the dataset-distillation networks spell them."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from torch import nn


def _instance_norm(channels: int) -> nn.Module:
    # One group per channel = per-sample, per-channel normalisation with a learned affine.
    # The reference networks use this, not nn.InstanceNorm2d (which has no affine by default).
    return nn.GroupNorm(channels, channels, affine=True)


def _batch_norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels)


def _no_norm(channels: int) -> nn.Module:
    return nn.Identity()


_NORMS: Mapping[str, Callable[[int], nn.Module]] = MappingProxyType({
    "instancenorm": _instance_norm,
    "batchnorm": _batch_norm,
    "none": _no_norm,
})


def list_norms() -> list[str]:
    return sorted(_NORMS)


def make_norm(name: str, channels: int) -> nn.Module:
    """A 2-d normalisation layer for `channels` feature maps."""
    if name not in _NORMS:
        raise ValueError(f"unknown norm {name!r}; valid norms: {', '.join(list_norms())}")
    return _NORMS[name](channels)
