"""ResNet-18 with a CIFAR-style stem and instance norm, at every resolution.

The stem is one stride-1 conv3x3 (no 7x7, no max-pool), so a 128 px input keeps 128x128 maps
in the first stage. The 32 px variant average-pools the final 4x4 map with a 4x4 window; the
ImageNet-resolution one pools adaptively to 1x1. Both give a 512-d feature.
"""
from __future__ import annotations

import torch
from torch import nn

from .norms import make_norm
from .spec import NetSpec

STAGE_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
STAGE_STRIDES: tuple[int, ...] = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two conv3x3 with a residual; a 1x1 conv + norm shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.norm2 = make_norm(norm, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                make_norm(norm, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _stage(in_channels: int, out_channels: int, stride: int, norm: str) -> nn.Sequential:
    blocks = [BasicBlock(in_channels, out_channels, stride, norm)]
    blocks += [BasicBlock(out_channels, out_channels, 1, norm) for _ in range(BLOCKS_PER_STAGE - 1)]
    return nn.Sequential(*blocks)


class ResNet18(nn.Module):
    """ResNet-18 (CIFAR stem); `norm` defaults to instance norm."""

    def __init__(self, channels: int, num_classes: int, resolution: int, norm: str = "instancenorm") -> None:
        super().__init__()
        self.spec = NetSpec(channels, num_classes, resolution)
        self.norm = norm
        self.stem = nn.Sequential(_conv3x3(channels, STAGE_WIDTHS[0]), make_norm(norm, STAGE_WIDTHS[0]), nn.ReLU(inplace=True))
        in_widths = (STAGE_WIDTHS[0],) + STAGE_WIDTHS[:-1]
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            _stage(i, o, s, norm) for i, o, s in zip(in_widths, STAGE_WIDTHS, STAGE_STRIDES)
        )
        self.pool = nn.AvgPool2d(4) if resolution == 32 else nn.AdaptiveAvgPool2d(1)
        self.embed_dim = STAGE_WIDTHS[-1]
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, embed_dim={self.embed_dim}"

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 512-d feature after layer4."""
        self.spec.check_input(x)
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
