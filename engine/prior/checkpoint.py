"""Atomic checkpoint files in a run folder, loaded without unpickling code."""
from __future__ import annotations

import os
from pathlib import Path

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(out_dir: Path) -> Path:
    return Path(out_dir) / CHECKPOINT_NAME


def save_checkpoint(state: dict, out_dir: Path) -> Path:
    """Write to a temporary file, then rename: a kill mid-write leaves the previous checkpoint intact."""
    path = checkpoint_path(out_dir)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(out_dir: Path) -> dict | None:
    path = checkpoint_path(out_dir)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def save_state_file(state: dict, path: Path) -> Path:
    """The same state at a path of the caller's choosing (one file, overwritten atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state_file(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file; one sentence is what helps
        raise ValueError(f"{path} is not a readable prior training state ({type(exc).__name__}); "
                         "delete it or point --state-file elsewhere") from None
