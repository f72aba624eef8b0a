"""Network registry: name -> builder plus the per-model evaluation learning rate.

Every builder picks the 32 px (CIFAR) variant at 32 px and the ImageNet-resolution variant
otherwise, so callers only name the family.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import nn

from .alexnet import AlexNet
from .convnet import ConvNet
from .resnet import ResNet18
from .spec import NetSpec
from .vgg import VGG11
from .vit import VIT_CIFAR, VIT_IMAGENET, ViT


# Guards the one process-wide resource seeded construction touches (see get_network).
_GLOBAL_RNG_LOCK = threading.Lock()


def _convnet(spec: NetSpec, depth: int | None = None, width: int = 128, norm: str = "instancenorm") -> nn.Module:
    return ConvNet(spec.channels, spec.num_classes, spec.resolution, depth=depth, width=width, norm=norm)


def _alexnet(spec: NetSpec) -> nn.Module:
    return AlexNet(spec.channels, spec.num_classes, spec.resolution)


def _vgg11(spec: NetSpec, norm: str = "instancenorm") -> nn.Module:
    return VGG11(spec.channels, spec.num_classes, spec.resolution, norm=norm)


def _resnet18(spec: NetSpec, norm: str = "instancenorm") -> nn.Module:
    return ResNet18(spec.channels, spec.num_classes, spec.resolution, norm=norm)


def _vit_config(resolution: int):
    return VIT_CIFAR if resolution == 32 else VIT_IMAGENET


def _vit(spec: NetSpec) -> nn.Module:
    return ViT(spec.channels, spec.num_classes, spec.resolution, config=_vit_config(spec.resolution))


def _any_resolution(resolution: int) -> str | None:
    """Why a family cannot be built at `resolution` (None: it can): NetSpec's rule, powers of two >= 32."""
    if resolution < 32 or resolution & (resolution - 1):
        return f"resolution must be a power of two >= 32, got {resolution}"
    return None


def _vit_resolution(resolution: int) -> str | None:
    patch = _vit_config(resolution).patch_size
    return _any_resolution(resolution) or (
        f"{resolution} px is not a multiple of its patch size {patch}" if resolution % patch else None)


@dataclass(frozen=True)
class NetEntry:
    """A registered family: its builder and the evaluation lr of the GLaD protocol."""

    build: Callable[..., nn.Module]
    eval_lr: float
    unsupported: Callable[[int], str | None] = _any_resolution  # resolution -> why not (None: supported)


_NETWORKS: Mapping[str, NetEntry] = MappingProxyType({
    "convnet": NetEntry(_convnet, 1e-3),
    "alexnet": NetEntry(_alexnet, 1e-3),
    "vgg11": NetEntry(_vgg11, 1e-4),
    "resnet18": NetEntry(_resnet18, 1e-3),
    "vit": NetEntry(_vit, 1e-3, _vit_resolution),
})


def list_networks() -> list[str]:
    """Registered names, in the evaluation-pool order (backbone first)."""
    return list(_NETWORKS)


def _entry(name: str) -> NetEntry:
    if name not in _NETWORKS:
        raise ValueError(f"unknown network {name!r}; valid networks: {', '.join(list_networks())}")
    return _NETWORKS[name]


def unsupported_reason(name: str, resolution: int) -> str | None:
    """Why network `name` cannot be built for `resolution` px images, or None when it can."""
    return _entry(name).unsupported(resolution)


def networks_for(resolution: int) -> list[str]:
    """The registered networks that can be built at `resolution` px, in the evaluation-pool order."""
    return [name for name in _NETWORKS if _NETWORKS[name].unsupported(resolution) is None]


def evaluation_lr(name: str) -> float:
    """The SGD learning rate the GLaD evaluation protocol trains `name` with."""
    return _entry(name).eval_lr


def get_network(
    name: str, channels: int, num_classes: int, resolution: int, *, seed: int | None = None, **kwargs
) -> nn.Module:
    """Build network `name` for `channels` x `resolution`^2 images and `num_classes` logits.

    With a `seed`, weights are drawn from a forked RNG seeded with it: the same seed gives the
    same weights and the global RNG state is left as it was. Without one, PyTorch's global RNG
    is used as usual. Networks are built on the CPU; move them afterwards.
    """
    entry = _entry(name)
    spec = NetSpec(channels, num_classes, resolution)
    if seed is None:
        return entry.build(spec, **kwargs)
    # Module init draws from the process-wide RNG; without the lock two runs building networks on
    # different threads (the studio's side-by-side compare) would interleave their seeds.
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        # Seed only the CPU generator, which is all a CPU construction draws from. torch.manual_seed
        # would also queue a CUDA reseed that fork_rng(devices=[]) cannot undo, firing at CUDA init.
        torch.random.default_generator.manual_seed(seed)
        return entry.build(spec, **kwargs)
