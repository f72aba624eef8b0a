"""Vision Transformers of the evaluation pools.

Two presets, from the facts (section 3.2):
- `VIT_CIFAR` (DC-BENCH `vit`, GLaD's ViTCIFAR): patch 4, dim 512, depth 6, 8 heads, MLP 512,
  dropout 0.1, pre-norm LayerNorm in every block and before the head.
- `VIT_IMAGENET` (GLaD's ImageNet-resolution ViT): patch 16, depth 10, otherwise the same, but
  with no LayerNorm anywhere (GLaD commented them out; we keep that behaviour on purpose).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .spec import NetSpec


@dataclass(frozen=True)
class ViTConfig:
    patch_size: int
    dim: int
    depth: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float
    emb_dropout: float
    layer_norm: bool

    def __post_init__(self) -> None:
        for name in ("patch_size", "dim", "depth", "heads", "dim_head", "mlp_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dropout", "emb_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


VIT_CIFAR = ViTConfig(patch_size=4, dim=512, depth=6, heads=8, dim_head=64, mlp_dim=512, dropout=0.1, emb_dropout=0.1, layer_norm=True)
VIT_IMAGENET = ViTConfig(patch_size=16, dim=512, depth=10, heads=8, dim_head=64, mlp_dim=512, dropout=0.1, emb_dropout=0.1, layer_norm=False)


def _norm(config: ViTConfig) -> nn.Module:
    return nn.LayerNorm(config.dim) if config.layer_norm else nn.Identity()


class Attention(nn.Module):
    """Multi-head self-attention; qkv without bias, output projection followed by dropout."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.heads = config.heads
        inner = config.heads * config.dim_head
        self.to_qkv = nn.Linear(config.dim, 3 * inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, config.dim), nn.Dropout(config.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, _ = x.shape
        q, k, v = (t.reshape(n, tokens, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(n, tokens, -1))


class TransformerBlock(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)); the norms are identities without LayerNorm."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.norm1 = _norm(config)
        self.attn = Attention(config)
        self.norm2 = _norm(config)
        self.mlp = nn.Sequential(
            nn.Linear(config.dim, config.mlp_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.mlp_dim, config.dim),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding, class token, learned positions, transformer, class-token head."""

    def __init__(self, channels: int, num_classes: int, resolution: int, config: ViTConfig = VIT_CIFAR) -> None:
        super().__init__()
        self.spec = NetSpec(channels, num_classes, resolution)
        if resolution % config.patch_size:
            raise ValueError(f"resolution {resolution} is not a multiple of the patch size {config.patch_size}")
        self.config = config
        self.num_patches = (resolution // config.patch_size) ** 2
        self.patch_embed = nn.Linear(channels * config.patch_size**2, config.dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, config.dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, self.num_patches + 1, config.dim))
        self.emb_dropout = nn.Dropout(config.emb_dropout)
        self.blocks = nn.Sequential(*(TransformerBlock(config) for _ in range(config.depth)))
        self.head_norm = _norm(config)
        self.embed_dim = config.dim
        self.classifier = nn.Linear(config.dim, num_classes)

    def extra_repr(self) -> str:
        c = self.config
        return f"patch_size={c.patch_size}, dim={c.dim}, depth={c.depth}, heads={c.heads}, layer_norm={c.layer_norm}"

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, num_patches, p*p*C], patches in row-major order."""
        n, c, h, w = x.shape
        p = self.config.patch_size
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(n, self.num_patches, p * p * c)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The class token after the transformer (and the head LayerNorm, where there is one)."""
        self.spec.check_input(x)
        tokens = self.patch_embed(self.patches(x))
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = self.blocks(self.emb_dropout(tokens + self.pos_embedding))
        return self.head_norm(tokens[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
