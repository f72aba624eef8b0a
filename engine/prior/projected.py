"""A projected discriminator: small conditional heads on the frozen features of a pre-trained classifier.

Projected GAN (Sauer et al. 2021) and StyleGAN-XL judge images in the feature space of a frozen pretrained
network, where a discriminator separates real from generated statistics long before a pixel discriminator
does. Here the network is our own proxy classifier (the one H-PD's distance reads); one head per chosen
backbone stage, each a residual stack down to 4x4 with a class projection (as the pixel discriminator),
their logits averaged. Only the heads are parameters: the proxy is held outside the module tree, so it is
neither trained, nor saved in the training state, nor handed to the optimiser.

Caveat for reading results: the embedded prior's Fréchet gate is measured in this same proxy's penultimate
features, so a generator trained against these heads is partly optimised for the gate's own space; the
stand-in classifier's agreement and the ConvNet-3 check on samples stay independent of it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from engine.generators.embedded import EqualLinear

from .discriminator import EqualConv, ResidualDown, _lrelu

STAGES = ("layer2", "layer3", "layer4")  # the shipped proxy: 32 ch at 16 px, 64 at 8, 128 at 4


class _Head(nn.Module):
    """One stage's features [N, C, H, W] + labels -> a logit [N]."""

    def __init__(self, channels: int, size: int, num_classes: int, width: int, gen: torch.Generator):
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"a projected head needs a power-of-two map of at least 4 px, got {size}")
        self.inp = EqualConv(channels, width, 1, gen)
        self.down = nn.Sequential(*[ResidualDown(width, width, gen) for _ in range(int(math.log2(size // 4)))])
        self.fc = EqualLinear(width * 16, width, gen, activate=True)
        self.out = EqualLinear(width, 1, gen)
        self.embed = EqualLinear(num_classes, width, gen)

    def forward(self, features: torch.Tensor, c_onehot: torch.Tensor) -> torch.Tensor:
        h = self.fc(self.down(_lrelu(self.inp(features))).flatten(1))
        return self.out(h).squeeze(1) + (self.embed(c_onehot) * h).sum(dim=1) / math.sqrt(h.shape[1])


class ProjectedDiscriminator(nn.Module):
    """[-1, 1] images + one-hot labels -> a real/fake logit [N], judged on the proxy's stages."""

    def __init__(self, proxy, num_classes: int, seed: int, stages: tuple[str, ...] = STAGES, width: int = 64):
        super().__init__()
        self._proxy = [proxy.eval().requires_grad_(False)]  # a list: not a submodule (not saved, not trained)
        self.stages = tuple(stages)
        shapes = self._shapes()
        gen = torch.Generator().manual_seed(seed)
        self.heads = nn.ModuleList(_Head(c, s, num_classes, width, gen) for c, s in shapes)

    @property
    def proxy(self):
        return self._proxy[0]

    def _shapes(self) -> list[tuple[int, int]]:
        probe = torch.zeros(2, self.proxy.inputs.channels, 32, 32, device=self.proxy._mean.device)
        with torch.no_grad():
            return [(f.shape[1], f.shape[-1]) for f in self.features(probe)]

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The proxy's outputs at `stages`, differentiable with respect to `images`."""
        found: dict[str, torch.Tensor] = {}
        backbone = self.proxy.backbone
        hooks = [backbone.get_submodule(name).register_forward_hook(
            lambda module, inputs, output, name=name: found.__setitem__(name, output)) for name in self.stages]
        try:
            self.proxy(images)
        finally:
            for hook in hooks:
                hook.remove()
        return [found[name] for name in self.stages]

    def forward(self, images: torch.Tensor, c_onehot: torch.Tensor) -> torch.Tensor:
        logits = [head(f, c_onehot) for head, f in zip(self.heads, self.features(images))]
        return torch.stack(logits).mean(dim=0)
