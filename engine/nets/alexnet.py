"""AlexNet as the dataset-distillation evaluation pools use it: five convs, no normalisation.

The 32 px (CIFAR) and ImageNet-resolution variants share every layer; only the size of the
flattened map, 192 * (H/8) * (W/8), differs.
"""
from __future__ import annotations

import torch
from torch import nn

from .spec import NetSpec


class AlexNet(nn.Module):
    """conv5x5-128, conv5x5-192, conv3x3-256, conv3x3-192, conv3x3-192 with three max-pools."""

    def __init__(self, channels: int, num_classes: int, resolution: int) -> None:
        super().__init__()
        self.spec = NetSpec(channels, num_classes, resolution)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(128, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(192, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 192, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        final = resolution // 8
        self.embed_dim = 192 * final * final
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}"

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened map after the last pooling."""
        self.spec.check_input(x)
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
