"""Fully connected layer with StyleGAN's equalised learning rate (gains applied at run time)."""
from __future__ import annotations

import torch
from torch import nn

from .config import FullyConnectedSpec
from .ops.activations import get_activation


class FullyConnectedLayer(nn.Module):
    """y = activation(x @ (W * weight_gain)^T + b * bias_gain); W [out, in], b [out]."""

    def __init__(self, spec: FullyConnectedSpec):
        super().__init__()
        self.spec = spec
        self.weight = nn.Parameter(torch.empty(spec.out_features, spec.in_features))
        self.bias = nn.Parameter(torch.empty(spec.out_features))
        self._activation = get_activation(spec.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.spec.weight_gain
        b = self.bias.to(x.dtype) * self.spec.bias_gain
        return self._activation(torch.addmm(b.unsqueeze(0), x, w.t()))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator, weight_init: float = 1.0, bias_init: float | list[float] = 0.0) -> None:
        """Random initialisation as trained models started: stored values are divided by the lr multiplier."""
        lr = self.spec.bias_gain
        self.weight.copy_(torch.randn(self.weight.shape, generator=generator) * (weight_init / lr))
        self.bias.copy_(torch.as_tensor(bias_init, dtype=torch.float32).expand(self.bias.shape) / lr)

    def extra_repr(self) -> str:
        s = self.spec
        return f"in={s.in_features}, out={s.out_features}, activation={s.activation}"
