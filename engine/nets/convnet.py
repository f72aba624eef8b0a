"""ConvNet: the distillation surrogate, the MTT backbone and the same-architecture evaluator.

D blocks of conv3x3 -> norm -> ReLU -> avg-pool 2x2, then one linear layer on the flattened map.
The parameter order (conv0, norm0, conv1, norm1, ..., classifier) is the flattening order used
for expert trajectories, so it must not change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norms import make_norm
from .spec import NetSpec


def default_depth(resolution: int) -> int:
    """The depth that leaves a 4x4 map: 3 at 32 px, 5 at 128 px, 6 at 256 px."""
    return resolution.bit_length() - 3


def avg_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling, stride 2.

    Without autograd on the CPU (DM's real side: 2,560 images a step, its largest cost) four strided adds
    beat avg_pool2d's NCHW kernel ~2x on the 32 px maps (BENCHMARKS.md, "DM real side"); with autograd
    avg_pool2d stays, its backward being the faster one. The two agree to float rounding.
    """
    if x.requires_grad or x.device.type != "cpu" or x.shape[-1] % 2 or x.shape[-2] % 2:
        return F.avg_pool2d(x, 2)
    return (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) * 0.25


class AvgPool2x2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool_2x2(x)


class ConvBlock(nn.Module):
    """conv3x3 -> norm -> ReLU; the pooling lives in the net so the pre-pool map can be read."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        # Padding 1 even for 1-channel inputs: we always feed 32 px, never 28 px.
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = make_norm(norm, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place: the norm's backward needs its input, not its output, and this saves a 32 px map's pass.
        return torch.relu_(self.norm(self.conv(x)))


class ConvNet(nn.Module):
    """ConvNet-D of `width` channels; `depth` defaults to the one that ends at a 4x4 map."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        resolution: int,
        depth: int | None = None,
        width: int = 128,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        self.spec = NetSpec(channels, num_classes, resolution)
        depth = default_depth(resolution) if depth is None else depth
        if not 1 <= depth <= default_depth(resolution) + 2:
            raise ValueError(f"depth must be in 1..{default_depth(resolution) + 2} at {resolution} px, got {depth}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.depth, self.width, self.norm = depth, width, norm
        self.blocks = nn.ModuleList(
            ConvBlock(channels if i == 0 else width, width, norm) for i in range(depth)
        )
        self.pool = AvgPool2x2()
        final = resolution >> depth
        self.embed_dim = width * final * final
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, width={self.width}, norm={self.norm!r}, embed_dim={self.embed_dim}"

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's post-ReLU, pre-pool activation (for diagnostics and distances)."""
        self.spec.check_input(x)
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
            x = self.pool(x)
        return maps

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened map after the last pooling: the classifier input, what DM matches."""
        self.spec.check_input(x)
        for block in self.blocks:
            x = self.pool(block(x))
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
