"""Checkpoint after every finished space, so a killed run continues from its last finished space and
ends exactly as an uninterrupted one would (same seed, same device): the state, every random stream and
the objective's own state (TESLA's learned rate) are saved together.

On several processes the checkpoint is the one a single process would write: rank 0 gathers every
process's latents and writes; on resume rank 0 reads and sends it to all, and each keeps its rows, so a
run continues on any number of processes. The streams need no gathering: every process draws the whole
set's numbers (engine/distributed.py), so they are in the same state everywhere.
"""
from __future__ import annotations

import json

import torch

from .context import RunContext
from .durable import replacing
from .state import RunState

FORMAT = "hpd-studio/run-checkpoint/2"


def save_checkpoint(ctx: RunContext, st: RunState, event_seq: int) -> None:
    run_state = st.state_dict()
    if ctx.shard is not None and ctx.dist.active:
        ws, f = (ctx.dist.gather_rows(t, ctx.shard) for t in (st.ws, st.f))
        if not ctx.dist.writes:
            return
        run_state |= {"ws": ws.detach().cpu(), "f": f.detach().cpu()}
    state = {"format": FORMAT, "state": run_state, "streams": ctx.streams.state_dict(),
             "objective": ctx.objective.state_dict(), "event_seq": event_seq}
    with replacing(ctx.run_dir / "checkpoint.pt") as tmp:  # unique name, fsynced, then renamed over
        torch.save(state, tmp)


def restore_checkpoint(ctx: RunContext, st: RunState) -> int:
    """load_checkpoint when the folder holds a checkpoint, as rank 0 sees it; 0 (a fresh start) when not."""
    if not ctx.dist.active:
        return load_checkpoint(ctx, st) if (ctx.run_dir / "checkpoint.pt").exists() else 0
    # Rank 0 reads (the others may not even see the folder, on other machines); an error it meets is
    # raised on every process, so none waits for the others in a collective.
    saved = ctx.dist.share(_read_or_error(ctx.run_dir / "checkpoint.pt") if ctx.dist.writes else None)
    if isinstance(saved, str):
        raise ValueError(saved)
    return 0 if saved is None else _restore(ctx, st, saved)


def _read_or_error(path) -> dict | str | None:
    if not path.exists():
        return None
    try:
        return _read(path)
    except ValueError as exc:
        return str(exc)


def load_checkpoint(ctx: RunContext, st: RunState) -> int:
    """Restore `st`, the streams and the objective from RUN_DIR/checkpoint.pt; returns the event seq it
    was taken at (the caller drops later events: the interrupted space runs again)."""
    return _restore(ctx, st, _read(ctx.run_dir / "checkpoint.pt"))


def _read(path) -> dict:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files (and its advice
        # to load with weights_only=False must never reach the user): one sentence instead
        raise ValueError(f"{path} is damaged ({type(exc).__name__}); delete it to restart the run from "
                         "the beginning, or restart the run in another folder") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(f"{path} is not a run checkpoint of this version (it holds a {type(saved).__name__}); "
                         "delete it to restart the run from the beginning, or restart the run in another folder")
    return saved


def _restore(ctx: RunContext, st: RunState, saved: dict) -> int:
    path = ctx.run_dir / "checkpoint.pt"
    try:
        st.load_state_dict(saved["state"], ctx.device, ctx.shard)
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
