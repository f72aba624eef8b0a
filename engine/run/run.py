"""A distillation run in one folder: `prepare()` builds its RunContext, `step()` moves its RunState.

Run owns the event bus and the folder (lock, run.json, checkpoints, export); the computation itself is
in loop.py as functions of (context, state). Not thread-safe by itself: drive it from one thread
(RunController applies commands from other threads between steps).

Under torchrun every process makes its own Run with the same config and folder and a `dist`
(engine/distributed.py); they step together, and rank 0 alone touches the folder (lock, log, run.json,
checkpoints, export), so it looks like a one-process run's to whoever follows it.
"""
from __future__ import annotations

import sys
import traceback
from dataclasses import replace
from pathlib import Path

from ..distributed import Distributed
from ..export import write_json
from ..generators import LayeredGenerator
from . import gradient, loop
from .checkpoint import restore_checkpoint, save_checkpoint, truncate_events
from .config import RunConfig
from .context import RunContext, build_context
from .durable import recover_staged, staged_entries
from .events import ErrorEvent, EventBus, ExportedEvent, PlanEvent, SelectedEvent, StateEvent
from .export import export_files, read_space_file
from .lock import RunLock, folder_lock
from .spaces import SpaceRecord
from .state import RunState
from .summary import summary


class Run:
    def __init__(self, config: RunConfig, run_dir: str | Path, *, generator: LayeredGenerator | None = None,
                 classifier=None, owner: str | None = None, dist: Distributed | None = None):
        """`generator`/`classifier` replace what the config's specs would load (tests, embedding apps);
        `owner` (an opaque id, e.g. the studio's hash of a user's token) is recorded in run.json; `dist`:
        the processes this run is spread over (default: this one alone)."""
        self.config = config
        self.dist = dist or Distributed()
        self.run_dir = Path(run_dir)
        self.owner = owner
        self.bus = EventBus()
        self.ctx: RunContext | None = None
        self.state = RunState()
        self._given = (generator, classifier)
        self._lock: RunLock | None = None

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def prepared(self) -> bool:
        return self.ctx is not None

    # ----------------------------------------------------------------- set-up
    def prepare(self) -> None:
        """Load data, generator, proxy and objective, and initialise the latents (or restore them). Once."""
        if self.ctx is not None:
            return
        ctx = build_context(self.config, self.run_dir, *self._given, dist=self.dist)
        st = RunState(spaces=[SpaceRecord(p.index, p.cuts, p.name) for p in ctx.plan])
        st.ws, st.f = loop.initial_latents(ctx)
        st.scheme = gradient.choose_scheme(self.config.sg_batch, ctx.G, ctx.plan[0].cut, len(ctx.labels), ctx.device)
        writes = self.dist.writes
        if writes:
            # The folder appears only once everything has loaded: bad input leaves nothing behind.
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock.acquire(self.run_dir)
            with folder_lock(self.run_dir):
                recover_staged(self.run_dir)  # an export a crash cut short is rolled forward, whole
        log = self.run_dir / "events.jsonl"
        # A resumed run continues from its checkpoint; the interrupted space's events are dropped (it runs
        # again), and a run killed before its first checkpoint starts its log over.
        try:
            seq = restore_checkpoint(ctx, st)
        except BaseException:
            self.close()  # a damaged checkpoint leaves the folder as it was, and free
            raise
        self.bus.restore_seq(seq)
        if writes:
            truncate_events(log, seq)
            self.bus.log_to(log)
        self.ctx, self.state = ctx, st
        if seq == 0:
            self.bus.emit(plan_event(ctx))
        self._write_run_json()

    def close(self) -> None:
        """Give the folder up (what the end of the process does too); the run can be resumed later."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ------------------------------------------------------------- the loop
    @property
    def finished(self) -> bool:
        return self.ctx is not None and self.state.finished

    def step(self) -> bool:
        """One optimisation step; returns False once the run has nothing left to do."""
        self.prepare()
        ctx, st = self.ctx, self.state
        if st.finished:
            return False
        space = st.space_index
        loop.step(ctx, st, self.bus.emit)
        if st.space_index != space:  # a space ended: its selection is on disk; checkpoint the run
            if st.finished:
                self._finish()
            save_checkpoint(ctx, st, self.bus.seq)  # every process: it gathers their latents
            self._write_run_json()
        return not st.finished

    def _finish(self) -> None:
        st = self.state
        if st.selection_reason != "user":
            scored = [s for s in st.spaces if s.accuracy is not None]
            if scored:
                self._set_selected(max(scored, key=lambda s: s.accuracy).index, "accuracy")
            else:
                self._set_selected(len(st.spaces) - 1, "last")
        if self.dist.writes:  # the export reads rank 0's space file
            self.export(st.selected_space)

    # ------------------------------------------------------------ commands
    @property
    def spaces_done(self) -> int:
        """How many spaces have finished (safe to read from any thread)."""
        return self.state.space_index if self.ctx is not None else 0

    def check_selectable(self, space: int) -> None:
        """Raise ValueError unless `space` has finished (safe to call from any thread)."""
        check_selectable(space, self.spaces_done)

    def select_layer(self, space: int) -> None:
        """The user's choice of which finished space's images to keep; re-exports if the run is over."""
        self.check_selectable(space)
        self._set_selected(space, "user")
        if self.finished:
            self.export(space)
        self._write_run_json()

    def export(self, space: int | None = None) -> Path:
        """Export a finished space's set (default: the selection, else the last finished space)."""
        self.check_selectable(0)
        if space is None:
            space = self.state.selected_space if self.state.selected_space is not None else self.state.space_index - 1
        self.check_selectable(space)
        saved = read_space_file(self.run_dir, space)
        # One export of the folder at a time; the new set is written beside the old one, fsynced and
        # swapped in piece by piece, so a reader (or a crash) never meets a half-written file.
        with folder_lock(self.run_dir), staged_entries(self.run_dir) as staging:
            export_files(staging, saved, self.ctx.info, self.summary() | {"exported_space": space})
        path = self.run_dir / "synthetic.pt"
        self.bus.emit(ExportedEvent(space, str(path)))
        return path

    def _set_selected(self, space: int, reason: str) -> None:
        self.state.selected_space, self.state.selection_reason = space, reason
        self.bus.emit(SelectedEvent(space, reason))

    def emit_state(self, state: str, message: str = "") -> None:
        self.state.status = state
        self.bus.emit(StateEvent(state, message))
        if self.ctx is not None:
            self._write_run_json()

    def fail(self, exc: BaseException) -> None:
        """Record the failure in the log and run.json as far as they can be written; never raises (the
        log or run.json may be what failed), so whoever drives the run always gets to clean up."""
        self.state.status = "failed"
        message = error_sentence(exc)
        steps = (lambda: self.bus.emit(ErrorEvent(message, "".join(traceback.format_exception(exc)))),
                 lambda: self.bus.emit(StateEvent("failed", message)),
                 lambda: self.ctx is not None and self._write_run_json())
        for record in steps:
            try:
                record()
            except Exception as err:  # noqa: BLE001 - reported, and the next record is still tried
                print(f"run {self.run_dir.name}: could not record its failure ({err!r})", file=sys.stderr)

    # ------------------------------------------------------------ reporting
    def summary(self) -> dict:
        return summary(self.ctx, self.state)

    def _write_run_json(self) -> None:
        if not self.dist.writes:
            return
        data = self.summary()
        if self.owner is not None:
            data["owner"] = self.owner
        write_json(self.run_dir / "run.json", data)

    def with_context(self, **changes) -> None:
        """Replace parts of the context (tests script the distance this way)."""
        self.ctx = replace(self.ctx, **changes)


def error_sentence(exc: BaseException) -> str:
    """One line for the user: our own errors (ValueError) as they are, anything else with its type."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = lines[0].strip() if lines else ""
    if isinstance(exc, ValueError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def plan_event(ctx: RunContext) -> PlanEvent:
    cfg, info = ctx.config, ctx.info
    spaces = tuple({"index": p.index, "cuts": list(p.cuts), "name": p.name,
                    "shape": list(ctx.G.layers[p.cut].shape)} for p in ctx.plan)
    return PlanEvent(cfg.method, cfg.objective, cfg.selection_basis, cfg.ipc, info.name, tuple(info.class_names),
                     tuple(info.mean), tuple(info.std), spaces, ctx.steps_per_space, ctx.distance is not None,
                     ctx.distance_note)


def check_selectable(space: int, done: int) -> None:
    """Raise ValueError unless `space` is one of the `done` finished spaces."""
    if not 0 <= space < done:
        raise ValueError(f"space {space} has not finished yet; finished spaces: 0..{done - 1}" if done
                         else "no space has finished yet")
