"""Files a run writes besides its checkpoint: each space's selection, previews, and the export."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from ..data import DatasetInfo
from ..export import DD_RANKING_FILES, write_json, write_set


def write_space_file(run_dir: Path, space: int, ws, f, cut: int, images, labels, syn_lr: float | None = None) -> Path:
    """spaces/space_XX.pt: the space's selected latents and the images they render (normalised space), and
    the objective's learned rate at the space's end where it learns one (TESLA's syn_lr)."""
    folder = run_dir / "spaces"
    folder.mkdir(exist_ok=True)
    path = folder / f"space_{space:02d}.pt"
    tmp = path.with_name(f".{path.name}.tmp")
    extra = {} if syn_lr is None else {"syn_lr": float(syn_lr)}
    torch.save({"ws": ws.detach().cpu(), "f": f.detach().cpu(), "layer": cut, "space": space,
                "images": images.detach().cpu(), "labels": labels.detach().cpu()} | extra, tmp)
    os.replace(tmp, path)
    return path


def read_space_file(run_dir: Path, space: int) -> dict:
    path = Path(run_dir) / "spaces" / f"space_{space:02d}.pt"
    if not path.exists():
        raise ValueError(f"{path} does not exist: space {space} has not finished in this run")
    return torch.load(path, map_location="cpu", weights_only=True)


def save_preview(run_dir: Path, space: int, step: int, images: torch.Tensor, info: DatasetInfo) -> str:
    folder = run_dir / "previews"
    folder.mkdir(exist_ok=True)
    name = f"space{space:02d}_step{step:04d}.png"
    ipc = max(1, len(images) // info.num_classes)
    save_image(make_grid(info.denormalize(images).clamp(0, 1), nrow=ipc if ipc > 1 else info.num_classes,
                         padding=2, pad_value=1.0), folder / name)
    return f"previews/{name}"


def export_files(run_dir: Path, saved: dict, info: DatasetInfo, provenance: dict, on_done=None) -> Path:
    """The export: synthetic.pt, DD-Ranking's images.pt/labels.pt (lr.pt when the space file holds a
    learned rate), images/, grid.png and export.json, each replaced atomically."""
    extra = {"ws": saved["ws"], "f": saved["f"], "layer": saved["layer"], "space": saved["space"]}
    syn_lr = saved.get("syn_lr")
    if syn_lr is not None:
        extra["syn_lr"] = float(syn_lr)
    staging = Path(tempfile.mkdtemp(prefix=".export.", dir=run_dir))
    try:
        write_set(staging, saved["images"], saved["labels"], info, extra, lr=syn_lr)
        write_json(staging / "export.json", provenance)
        for name in ("synthetic.pt", "grid.png", "export.json", *DD_RANKING_FILES):
            if (staging / name).exists():
                os.replace(staging / name, run_dir / name)
            else:  # lr.pt of an earlier export of a space without a learned rate
                (run_dir / name).unlink(missing_ok=True)
        _swap_folder(staging / "images", run_dir / "images")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if on_done:
        on_done(run_dir / "synthetic.pt")
    return run_dir / "synthetic.pt"


def _swap_folder(new: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)
