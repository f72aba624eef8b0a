"""Writing a synthetic set to disk: tensors, per-class PNGs and a grid; JSON written atomically."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from .data import DatasetInfo


def folder_name(class_name: str) -> str:
    """A class name made safe as one path component ("T-shirt/top" -> "T-shirt_top")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", class_name).strip("_") or "class"


def write_set(folder: Path, images: torch.Tensor, labels: torch.Tensor, info: DatasetInfo,
              extra: dict | None = None) -> None:
    """synthetic.pt (normalised images + labels + extra tensors), images/<class>/<k>.png, grid.png."""
    images, labels = images.detach().cpu().float(), labels.detach().cpu().long()
    torch.save({"images": images, "labels": labels, **(extra or {})}, folder / "synthetic.pt")
    pixels = info.denormalize(images).clamp(0, 1)
    for c, name in enumerate(info.class_names):
        class_dir = folder / "images" / folder_name(name)
        class_dir.mkdir(parents=True, exist_ok=True)
        for k, img in enumerate(pixels[labels == c]):
            save_image(img, class_dir / f"{k:03d}.png")
    ipc = max(1, int((labels == labels[0]).sum())) if len(labels) else 1
    save_image(make_grid(pixels, nrow=ipc if ipc > 1 else len(info.class_names), padding=2, pad_value=1.0),
               folder / "grid.png")


def write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
