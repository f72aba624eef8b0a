"""Writing the EMA generator in the shipped asset format: config kwargs + state dict + meta, no code."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from engine.generators.embedded import ASSET_FORMAT, EmbeddedGenerator


def export_generator(G: EmbeddedGenerator, path: Path, meta: dict) -> str:
    """Save G for `load_embedded`; returns the file's sha256 (record it in embedded.py's asset table)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in G.state_dict().items()}
    torch.save({"format": ASSET_FORMAT, "config": G.cfg.to_dict(), "state_dict": state, "meta": dict(meta)}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()
