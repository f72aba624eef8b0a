"""Mapping network: z and a class label -> ws [N, num_ws, w_dim] (all rows equal before truncation)."""
from __future__ import annotations

import torch
from torch import nn

from .config import MappingConfig
from .fully_connected import FullyConnectedLayer


def _normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class MappingNetwork(nn.Module):
    """Conditional models embed the argmax of the one-hot class, project it to z_dim and append it to z.

    Only the argmax of `c` matters: an all-zero row means class 0. The embedding table keeps its
    1000 ImageNet rows for every model, so CIFAR-10 class k uses row k.
    """

    def __init__(self, config: MappingConfig):
        super().__init__()
        self.config = config
        w_avg_shape = (config.c_dim, config.w_dim) if config.per_class_w_avg else (config.w_dim,)
        self.register_buffer("w_avg", torch.zeros(w_avg_shape))
        # `_weight` skips nn.Embedding's own initialisation, which would draw from the global RNG.
        self.embed = nn.Embedding(config.embed_rows, config.embed_dim, _weight=torch.empty(config.embed_rows, config.embed_dim))
        self.embed_proj = FullyConnectedLayer(config.embed_proj) if config.conditional else None
        for i, spec in enumerate(config.layers):
            self.add_module(f"fc{i}", FullyConnectedLayer(spec))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        cfg = self.config
        if z.ndim != 2 or z.shape[1] != cfg.z_dim:
            raise ValueError(f"z must be [N, {cfg.z_dim}], got {list(z.shape)}")
        if cfg.conditional and (c.ndim != 2 or c.shape != (z.shape[0], cfg.c_dim)):
            raise ValueError(f"c must be one-hot [N, {cfg.c_dim}] with N={z.shape[0]}, got {list(c.shape)}")
        x = _normalize_2nd_moment(z.float())
        label = c.argmax(dim=1) if cfg.conditional else None
        if cfg.conditional:
            x = torch.cat([x, _normalize_2nd_moment(self.embed_proj(self.embed(label)))], dim=1)
        for i in range(len(cfg.layers)):
            x = getattr(self, f"fc{i}")(x)
        if truncation_psi != 1:
            avg = self.w_avg[label] if cfg.per_class_w_avg else self.w_avg.expand_as(x)
            x = avg.lerp(x, truncation_psi)
        ws = x.unsqueeze(1).expand(-1, cfg.num_ws, -1).contiguous()
        assert ws.shape == (z.shape[0], cfg.num_ws, cfg.w_dim)
        return ws

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.embed.weight.copy_(torch.randn(self.embed.weight.shape, generator=generator))
        if self.embed_proj is not None:
            self.embed_proj.reset_parameters(generator)
        for i in range(len(self.config.layers)):
            getattr(self, f"fc{i}").reset_parameters(generator)
        self.w_avg.zero_()
