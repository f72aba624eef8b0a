"""Checkpoint after every finished space, so a killed run continues from its last finished space and
ends exactly as an uninterrupted one would (same seed, same device)."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import torch

from .spaces import SpaceRecord

if TYPE_CHECKING:
    from .run import Run

FORMAT = "hpd-studio/run-checkpoint/1"


def save_checkpoint(run: "Run") -> None:
    state = {
        "format": FORMAT,
        "space_index": run.space_index,
        "steps_done": run.steps_done,
        "elapsed_s": run.elapsed_s,
        "ws": run.ws.detach().cpu(),
        "f": run.f.detach().cpu(),
        "streams": run.streams.state_dict(),
        "objective": run.objective.state_dict(),
        "spaces": json.dumps([s.to_json() for s in run.spaces]),
        "selected_space": -1 if run.selected_space is None else run.selected_space,
        "selection_reason": run.selection_reason or "",
        "event_seq": run.bus.next_seq(),
    }
    path = run.run_dir / "checkpoint.pt"
    tmp = path.with_name(".checkpoint.pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(run: "Run") -> None:
    path = run.run_dir / "checkpoint.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is unreadable ({exc}); delete it to start the run over.") from exc
    if state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a run checkpoint of this version; delete it to start the run over.")
    device = run.labels.device
    run.space_index, run.steps_done, run.elapsed_s = state["space_index"], state["steps_done"], state["elapsed_s"]
    run.ws, run.f = state["ws"].to(device), state["f"].to(device)
    run.streams.load_state_dict(state["streams"])
    run.objective.load_state_dict(state["objective"])
    run.spaces = [SpaceRecord.from_json(s) for s in json.loads(state["spaces"])]
    run.selected_space = None if state["selected_space"] < 0 else state["selected_space"]
    run.selection_reason = state["selection_reason"] or None
    run.step_in_space = 0
    _truncate_events(run, state["event_seq"])


def _truncate_events(run: "Run", seq: int) -> None:
    """Drop the events of the space that was interrupted: it runs again from its start."""
    log = run.run_dir / "events.jsonl"
    if log.exists():
        kept = []
        for line in log.read_text().splitlines():
            try:
                if json.loads(line)["seq"] <= seq:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                break
        log.write_text("".join(line + "\n" for line in kept))
    run.bus.restore_seq(seq)
