"""VGG-11 with instance norm, as the dataset-distillation evaluation pools use it.

At 32 px (the CIFAR variant) five max-pools leave a 1x1 map that feeds a 512-d linear layer.
At ImageNet resolutions the map is adaptively max-pooled to 7x7 (a 4x4 map at 128 px is
upsampled by replication) before a 512*49-d linear layer.
"""
from __future__ import annotations

import torch
from torch import nn

from .norms import make_norm
from .spec import NetSpec

_POOL = 0  # marks a max-pool in the layer plan
VGG11_PLAN: tuple[int, ...] = (64, _POOL, 128, _POOL, 256, 256, _POOL, 512, 512, _POOL, 512, 512, _POOL)


def _vgg_features(channels: int, plan: tuple[int, ...], norm: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in plan:
        if width == _POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), make_norm(norm, width), nn.ReLU(inplace=True)]
        channels = width
    return nn.Sequential(*layers)


class VGG11(nn.Module):
    """VGG-11; `norm` defaults to instance norm (GroupNorm with one group per channel)."""

    def __init__(self, channels: int, num_classes: int, resolution: int, norm: str = "instancenorm") -> None:
        super().__init__()
        self.spec = NetSpec(channels, num_classes, resolution)
        self.norm = norm
        self.features = _vgg_features(channels, VGG11_PLAN, norm)
        cifar = resolution == 32
        self.pool = nn.Identity() if cifar else nn.AdaptiveMaxPool2d((7, 7))
        self.embed_dim = 512 if cifar else 512 * 7 * 7
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, embed_dim={self.embed_dim}"

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened map after the final pooling."""
        self.spec.check_input(x)
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
