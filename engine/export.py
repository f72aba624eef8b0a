"""Writing a synthetic set to disk: tensors, per-class PNGs and a grid; JSON written atomically.

Beside `synthetic.pt` goes DD-Ranking's input layout (NUS-HPC-AI-Lab/DD-Ranking's scripts read
`torch.load(dir / "images.pt")` as the image tensor and build the hard labels class-major,
`[0]*IPC + [1]*IPC + ...`): `images.pt` float32 [classes*IPC, C, H, W] in class-major order in the
dataset's normalised space, `labels.pt` int64 [classes*IPC], and `lr.pt` (a float32 scalar tensor, read
as `syn_lr`) where the method learned its own rate (TESLA)."""
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


DD_RANKING_FILES = ("images.pt", "labels.pt", "lr.pt")


def write_set(folder: Path, images: torch.Tensor, labels: torch.Tensor, info: DatasetInfo,
              extra: dict | None = None, lr: float | None = None) -> None:
    """synthetic.pt (normalised images + labels + extra tensors), DD-Ranking's images.pt/labels.pt (and
    lr.pt when `lr`, a learned rate, is given), images/<class>/<k>.png, grid.png."""
    images, labels = images.detach().cpu().float(), labels.detach().cpu().long()
    torch.save({"images": images, "labels": labels, **(extra or {})}, folder / "synthetic.pt")
    write_dd_ranking(folder, images, labels, lr)
    pixels = info.denormalize(images).clamp(0, 1)
    for c, name in enumerate(info.class_names):
        class_dir = folder / "images" / folder_name(name)
        class_dir.mkdir(parents=True, exist_ok=True)
        for k, img in enumerate(pixels[labels == c]):
            save_image(img, class_dir / f"{k:03d}.png")
    ipc = max(1, int((labels == labels[0]).sum())) if len(labels) else 1
    save_image(make_grid(pixels, nrow=ipc if ipc > 1 else len(info.class_names), padding=2, pad_value=1.0),
               folder / "grid.png")


def write_dd_ranking(folder: Path, images: torch.Tensor, labels: torch.Tensor, lr: float | None = None) -> None:
    """images.pt, labels.pt (class-major: a stable sort by label) and, with `lr`, lr.pt."""
    order = torch.sort(labels.cpu(), stable=True).indices
    torch.save(images.detach().cpu().float()[order].contiguous(), folder / "images.pt")
    torch.save(labels.detach().cpu().long()[order].contiguous(), folder / "labels.pt")
    if lr is not None:
        torch.save(torch.tensor(float(lr), dtype=torch.float32), folder / "lr.pt")


def write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
