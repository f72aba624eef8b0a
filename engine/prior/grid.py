"""A class-labelled grid of generator samples: one row per class, fixed noises so grids compare."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from engine.generators.base import LayeredGenerator


@torch.no_grad()
def sample_rows(G: LayeredGenerator, per_class: int, seed: int, truncation_psi: float = 1.0) -> torch.Tensor:
    """[classes, per_class, C, H, W] images in [-1, 1]; the same z per column for every class."""
    device = next(G.parameters()).device
    z = torch.randn(per_class, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    rows = []
    for c in range(G.num_classes):
        onehot = F.one_hot(torch.full((per_class,), c), G.num_classes).float().to(device)
        rows.append(G(G.mapping(z, onehot, truncation_psi)).cpu())
    return torch.stack(rows)


def grid_image(rows: torch.Tensor, class_names: tuple[str, ...], scale: int = 2, label_width: int = 80) -> Image.Image:
    """Tile [rows, cols, C, H, W] images in [-1, 1] into a PIL image with a class label per row."""
    n_rows, n_cols, ch, h, w = rows.shape
    pixels = ((rows.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    tiles = pixels.permute(0, 3, 1, 4, 2).reshape(n_rows * h, n_cols * w, ch)
    mode = "L" if ch == 1 else "RGB"
    body = Image.fromarray(tiles.squeeze(-1).numpy() if ch == 1 else tiles.numpy(), mode)
    body = body.resize((body.width * scale, body.height * scale), Image.NEAREST)
    canvas = Image.new(mode, (label_width + body.width, body.height), 255 if ch == 1 else (255, 255, 255))
    canvas.paste(body, (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(class_names[:n_rows]):
        draw.text((4, r * h * scale + h * scale // 2 - 5), name, fill=0 if ch == 1 else (0, 0, 0))
    return canvas


def save_grid(G: LayeredGenerator, path: Path, class_names: tuple[str, ...], per_class: int = 10, seed: int = 0) -> Path:
    grid_image(sample_rows(G, per_class, seed), class_names).save(path)
    return Path(path)
