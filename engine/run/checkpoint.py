"""Checkpoint after every finished space, so a killed run continues from its last finished space and
ends exactly as an uninterrupted one would (same seed, same device): the state, every random stream and
the objective's own state (TESLA's learned rate) are saved together."""
from __future__ import annotations

import json

import torch

from .context import RunContext
from .durable import replacing
from .state import RunState

FORMAT = "hpd-studio/run-checkpoint/2"


def save_checkpoint(ctx: RunContext, st: RunState, event_seq: int) -> None:
    state = {"format": FORMAT, "state": st.state_dict(), "streams": ctx.streams.state_dict(),
             "objective": ctx.objective.state_dict(), "event_seq": event_seq}
    with replacing(ctx.run_dir / "checkpoint.pt") as tmp:  # unique name, fsynced, then renamed over
        torch.save(state, tmp)


def load_checkpoint(ctx: RunContext, st: RunState) -> int:
    """Restore `st`, the streams and the objective from RUN_DIR/checkpoint.pt; returns the event seq it
    was taken at (the caller drops later events: the interrupted space runs again)."""
    path = ctx.run_dir / "checkpoint.pt"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files (and its advice
        # to load with weights_only=False must never reach the user): one sentence instead
        raise ValueError(f"{path} is damaged ({type(exc).__name__}); delete it to restart the run from "
                         "the beginning, or restart the run in another folder") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(f"{path} is not a run checkpoint of this version (it holds a {type(saved).__name__}); "
                         "delete it to restart the run from the beginning, or restart the run in another folder")
    try:
        st.load_state_dict(saved["state"], ctx.device)
        ctx.streams.load_state_dict(saved["streams"])
        ctx.objective.load_state_dict(saved["objective"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path} does not fit this run ({exc}); delete it to start the run over.") from None
    return int(saved["event_seq"])


def truncate_events(log, seq: int) -> None:
    """Drop the events after `seq` (those of the space that was interrupted: it runs again)."""
    if not log.exists():
        return
    kept = []
    for line in log.read_text().splitlines():
        try:
            if json.loads(line)["seq"] <= seq:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            break
    log.write_text("".join(line + "\n" for line in kept))
