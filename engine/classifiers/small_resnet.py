"""torchvision's ResNet-18 adapted to small grey images: 3x3 stride-1 stem, no max-pool, narrower stages.

The network is built by torchvision's own builder and then adapted, so its module names
(`conv1`, `layer1`..`layer4`, `fc`) and blocks are torchvision's; only the stem and the widths change.
torchvision's ResNet fixes the BasicBlock widths at 64..512, so a narrower net replaces the four
stages with torchvision BasicBlocks of `width`, 2x, 4x and 8x channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

STAGE_STRIDES: tuple[int, ...] = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2  # ResNet-18


@dataclass(frozen=True)
class SmallResNetConfig:
    """What the adapted ResNet-18 needs; stored in the asset so loading rebuilds the same net."""

    in_channels: int = 1
    num_classes: int = 10
    width: int = 16  # channels of the stem and layer1; layer4 has 8x this

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def feature_channels(self) -> int:
        return self.width * 2 ** (len(STAGE_STRIDES) - 1)


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    blocks = [BasicBlock(in_channels, out_channels, stride, downsample)]
    blocks += [BasicBlock(out_channels, out_channels) for _ in range(BLOCKS_PER_STAGE - 1)]
    return nn.Sequential(*blocks)


def _init_like_torchvision(net: nn.Module) -> None:
    # The replaced layers would otherwise keep PyTorch's default init, not the builder's.
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_small_resnet18(config: SmallResNetConfig) -> torchvision.models.ResNet:
    """A torchvision ResNet-18 for 32 px inputs; `layer4` gives [N, 8*width, 4, 4]."""
    net = torchvision.models.resnet18(weights=None, num_classes=config.num_classes)
    w = config.width
    # A 7x7 stride-2 stem plus max-pool would leave a 1x1 layer4 map at 32 px: no spatial CAM.
    net.conv1 = nn.Conv2d(config.in_channels, w, kernel_size=3, stride=1, padding=1, bias=False)
    net.bn1 = nn.BatchNorm2d(w)
    net.maxpool = nn.Identity()
    widths = [w * 2 ** i for i in range(len(STAGE_STRIDES))]
    for i, (out_channels, stride) in enumerate(zip(widths, STAGE_STRIDES)):
        in_channels = widths[i - 1] if i else w
        setattr(net, f"layer{i + 1}", _stage(in_channels, out_channels, stride))
    net.fc = nn.Linear(widths[-1], config.num_classes)
    _init_like_torchvision(net)
    return net
