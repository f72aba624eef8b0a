"""Engine events -> the next snapshot. One small reducer per event type, looked up in a table."""
from __future__ import annotations

from typing import Callable

import numpy as np

from engine import ErrorEvent, ExportedEvent, SelectedEvent, SpaceEndEvent, StateEvent, StepEvent

from .snapshot import CurvePoint, Snapshot, SpaceView


def to_uint8(images, info) -> np.ndarray:
    """Normalised CPU tensor [N, C, H, W] -> uint8 [N, H, W, C] for drawing."""
    x = (info.denormalize(images.float()).clamp(0, 1) * 255).round().byte()
    return x.permute(0, 2, 3, 1).numpy()


def layout(snap: Snapshot, run) -> Snapshot:
    """The run's space plan, known once it has prepared; drawn from the first update (chart boundaries)."""
    if snap.layers or not getattr(run, "spaces", None):
        return snap
    return snap.evolve(layers=tuple(s.name for s in run.spaces), steps_per_space=run.steps_per_space,
                       class_names=tuple(run.info.class_names), ipc=run.config.ipc)


def _state(snap: Snapshot, e: StateEvent, run) -> Snapshot:
    # "running" ends the "loading ..." note; a failure's message stays.
    message = e.message or ("" if e.state == "running" else snap.message)
    return snap.evolve(state=e.state, message=message, elapsed_s=getattr(run, "elapsed_s", snap.elapsed_s))


def _step(snap: Snapshot, e: StepEvent, run) -> Snapshot:
    point = CurvePoint(e.space * snap.steps_per_space + e.step, e.space, e.distance, e.loss)
    changes = dict(space=e.space, step=e.step, steps_done=e.steps_done, elapsed_s=e.elapsed_s,
                   curve=snap.curve + (point,))
    if e.images is not None:
        changes.update(preview=to_uint8(e.images, run.info), preview_version=snap.preview_version + 1)
    return snap.evolve(**changes)


def _space_end(snap: Snapshot, e: SpaceEndEvent, run) -> Snapshot:
    images = to_uint8(e.images, run.info) if e.images is not None else None
    view = SpaceView(e.space, snap.layers[e.space] if e.space < len(snap.layers) else str(e.space),
                     e.best_step, e.best_distance, e.accuracy, images)
    # The grid shows the kept latent's images: the run continues from them, and they are what a
    # finished run exports (the last preview may be a later, worse step).
    changes = dict(preview=images, preview_version=snap.preview_version + 1) if images is not None else {}
    return snap.evolve(spaces=snap.spaces + (view,), **changes)


def _selected(snap: Snapshot, e: SelectedEvent, run) -> Snapshot:
    return snap.evolve(selected_space=e.space, selection_reason=e.reason)


def _exported(snap: Snapshot, e: ExportedEvent, run) -> Snapshot:
    return snap.evolve(export_path=e.path)


def _error(snap: Snapshot, e: ErrorEvent, run) -> Snapshot:
    # The message is the user's; the traceback stays in events.jsonl for whoever debugs.
    return snap.evolve(message=e.message)


REDUCERS: dict[type, Callable] = {StateEvent: _state, StepEvent: _step, SpaceEndEvent: _space_end,
                                  SelectedEvent: _selected, ExportedEvent: _exported, ErrorEvent: _error}


def reduce(snap: Snapshot, event, run) -> Snapshot:
    snap = layout(snap, run)
    fn = REDUCERS.get(type(event))
    return fn(snap, event, run) if fn else snap
