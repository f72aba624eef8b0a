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


# Adam's moments are over a third of the state; in bfloat16 (8 significant bits, float32's range) the
# committed file shrinks from 22.7 to ~16 MB and a continuation from it differs from an uninterrupted run
# by that rounding only. The run folder's checkpoint.pt stays exact and wins a tie (engine/prior/loop.py).
MOMENTS = ("exp_avg", "exp_avg_sq")
OPTIMISERS = ("opt_g", "opt_d", "opt_dp")


def compact(state: dict) -> dict:
    """`state` with the optimisers' moments in bfloat16 (weights, EMA, RNG and counters unchanged)."""
    out = dict(state)
    for name in OPTIMISERS:
        if name not in state:  # opt_dp: only with a projected discriminator
            continue
        opt = state[name]
        out[name] = {**opt, "state": {i: {k: v.to(torch.bfloat16) if k in MOMENTS else v for k, v in s.items()}
                                      for i, s in opt["state"].items()}}
    return out


def _widen(state: dict) -> dict:
    for name in OPTIMISERS:
        if name not in state:  # opt_dp: only with a projected discriminator
            continue
        for s in state[name]["state"].values():
            for k in MOMENTS:
                if k in s:
                    s[k] = s[k].float()
    return state


def save_state_file(state: dict, path: Path) -> Path:
    """The state, compacted, at a path of the caller's choosing (one file, overwritten atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(compact(state), tmp)
    os.replace(tmp, path)
    return path


def load_state_file(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return _widen(state)
    except Exception as exc:  # torch raises many types for a damaged file; one sentence is what helps
        raise ValueError(f"{path} is not a readable prior training state ({type(exc).__name__}); "
                         "delete it or point --state-file elsewhere") from None
