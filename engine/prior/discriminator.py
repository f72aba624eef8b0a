"""A residual projection discriminator with minibatch standard deviation and an auxiliary class head."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.generators.embedded import LRELU_GAIN, EqualLinear


class EqualConv(nn.Module):
    """A convolution with an equalised learning rate."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, gen: torch.Generator, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel, generator=gen))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1 / math.sqrt(in_ch * kernel * kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.weight.shape[-1] // 2)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


class ResidualDown(nn.Module):
    """conv -> conv -> avgpool, plus a 1x1 shortcut, halving the resolution (StyleGAN2's resnet D)."""

    def __init__(self, in_ch: int, out_ch: int, gen: torch.Generator):
        super().__init__()
        self.conv0 = EqualConv(in_ch, in_ch, 3, gen)
        self.conv1 = EqualConv(in_ch, out_ch, 3, gen)
        self.skip = EqualConv(in_ch, out_ch, 1, gen, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(_lrelu(self.conv1(_lrelu(self.conv0(x)))), 2)
        s = self.skip(F.avg_pool2d(x, 2))
        return (y + s) / math.sqrt(2)


def minibatch_std(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append one channel: the mean std over groups of samples, so D can see a collapsed batch."""
    n, c, h, w = x.shape
    g = math.gcd(group, n)
    y = x.reshape(g, -1, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class ProjectionDiscriminator(nn.Module):
    """32x32 images + labels -> (real/fake logit [N], class logits [N, classes]).

    The logit is an unconditional score plus the projection <embed(c), h> (Miyato and Koyama 2018);
    the class head is trained on real images only and gives the generator a class signal.
    """

    def __init__(self, channels: int, num_classes: int, widths: tuple[int, ...], seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.from_rgb = EqualConv(channels, widths[0], 1, gen)
        self.blocks = nn.Sequential(*[ResidualDown(a, b, gen) for a, b in zip(widths[:3], widths[1:])])
        self.conv = EqualConv(widths[3] + 1, widths[3], 3, gen)
        self.fc = EqualLinear(widths[3] * 16, widths[3], gen, activate=True)
        self.out = EqualLinear(widths[3], 1, gen)
        self.embed = EqualLinear(num_classes, widths[3], gen)
        self.cls = EqualLinear(widths[3], num_classes, gen)
        self.resolution = 32

    def forward(self, x: torch.Tensor, c_onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert x.shape[2:] == (self.resolution, self.resolution), x.shape
        h = self.blocks(_lrelu(self.from_rgb(x)))
        assert h.shape[2:] == (4, 4), h.shape
        h = self.fc(_lrelu(self.conv(minibatch_std(h))).flatten(1))
        proj = (self.embed(c_onehot) * h).sum(dim=1) / math.sqrt(h.shape[1])
        return self.out(h).squeeze(1) + proj, self.cls(h)
