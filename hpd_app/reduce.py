"""Engine events -> the next snapshot. One small reducer per event type, looked up in a table.

The same reducers serve a live run (events from its bus, images attached) and a folder read from disk
(events from events.jsonl, each finished space's images loaded from its file): the plan event at the
start of every log says everything else the page needs.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from engine import (ErrorEvent, ExportedEvent, PlanEvent, SelectedEvent, SpaceEndEvent, SpaceStartEvent, StateEvent,
                    StepEvent)

from .snapshot import CurvePoint, Snapshot, SpaceView


def to_uint8(images, mean, std) -> np.ndarray:
    """Normalised CPU tensor [N, C, H, W] -> uint8 [N, H, W, C] for drawing."""
    x = images.float()
    m = x.new_tensor(mean).view(1, -1, 1, 1)
    s = x.new_tensor(std).view(1, -1, 1, 1)
    x = ((x * s + m).clamp(0, 1) * 255).round().byte()
    return x.permute(0, 2, 3, 1).numpy()


def _images(snap: Snapshot, e) -> np.ndarray | None:
    images = getattr(e, "images", None)
    return None if images is None else to_uint8(images, snap.mean, snap.std)


def _plan(snap: Snapshot, e: PlanEvent) -> Snapshot:
    return snap.evolve(method=e.method, layers=tuple(s["name"] for s in e.spaces), steps_per_space=e.steps_per_space,
                       class_names=tuple(e.classes), ipc=e.ipc, mean=tuple(e.mean), std=tuple(e.std),
                       distance_measured=e.distance, note=e.note)


def _state(snap: Snapshot, e: StateEvent) -> Snapshot:
    # "running" ends the "loading ..." note; a failure's message stays.
    message = e.message or ("" if e.state == "running" else snap.message)
    return snap.evolve(state=e.state, message=message)


def _point(snap: Snapshot, point: CurvePoint) -> tuple[CurvePoint, ...]:
    # A resumed run repeats the steps of the space it was interrupted in: the later point wins. A space's
    # step 0 shares its x with the previous space's last step (the same images, advanced): keys, not x.
    key = (point.space, point.x)
    return tuple(p for p in snap.curve if (p.space, p.x) < key) + (point,)


def _previews(snap: Snapshot, point: CurvePoint, path: str | None) -> tuple:
    """The scrubber's list with this step's saved preview (a resumed run's repeat replaces the old one)."""
    if not path:
        return snap.previews
    entry = (point.x, point.space, point.step, path)
    return tuple(sorted([p for p in snap.previews if (p[1], p[2]) != (point.space, point.step)] + [entry],
                        key=lambda p: (p[1], p[2])))


def _space_start(snap: Snapshot, e: SpaceStartEvent) -> Snapshot:
    point = CurvePoint(e.space * snap.steps_per_space, e.space, 0, e.distance, None)
    changes = dict(space=e.space, step=0, curve=_point(snap, point), previews=_previews(snap, point, e.preview))
    images = _images(snap, e)
    if images is not None:
        changes.update(preview=images, preview_version=snap.preview_version + 1)
    return snap.evolve(**changes)


def _step(snap: Snapshot, e: StepEvent) -> Snapshot:
    point = CurvePoint(e.space * snap.steps_per_space + e.step, e.space, e.step, e.distance, e.loss)
    changes = dict(space=e.space, step=e.step, steps_done=e.steps_done, elapsed_s=e.elapsed_s,
                   curve=_point(snap, point), previews=_previews(snap, point, e.preview))
    images = _images(snap, e)
    if images is not None:
        changes.update(preview=images, preview_version=snap.preview_version + 1)
    return snap.evolve(**changes)


def _space_end(snap: Snapshot, e: SpaceEndEvent) -> Snapshot:
    images = _images(snap, e)
    view = SpaceView(e.space, snap.layers[e.space] if e.space < len(snap.layers) else str(e.space),
                     e.best_step, e.best_distance, e.accuracy, images)
    # The grid shows the kept latent's images: the run continues from them, and they are what a
    # finished run exports (the last preview may be a later, worse step).
    changes = dict(preview=images, preview_version=snap.preview_version + 1) if images is not None else {}
    spaces = tuple(v for v in snap.spaces if v.index != e.space) + (view,)
    return snap.evolve(spaces=spaces, **changes)


def _selected(snap: Snapshot, e: SelectedEvent) -> Snapshot:
    view = next((v for v in snap.spaces if v.index == e.space), None)
    changes = {}
    if view is not None and view.images is not None:  # the main grid follows the selection
        changes = dict(preview=view.images, preview_version=snap.preview_version + 1)
    return snap.evolve(selected_space=e.space, selection_reason=e.reason, **changes)


def _exported(snap: Snapshot, e: ExportedEvent) -> Snapshot:
    return snap.evolve(export_path=e.path, exported_space=e.space)


MAX_WARNINGS = 5


def _error(snap: Snapshot, e: ErrorEvent) -> Snapshot:
    # The message is the user's; the traceback stays in events.jsonl for whoever debugs. A listener that
    # failed while the run went on is a warning: it must not read as the run's own failure.
    if e.source == "subscriber":
        if e.message in snap.warnings:
            return snap
        return snap.evolve(warnings=(snap.warnings + (e.message,))[-MAX_WARNINGS:])
    return snap.evolve(message=e.message)


REDUCERS: dict[type, Callable] = {PlanEvent: _plan, StateEvent: _state, SpaceStartEvent: _space_start,
                                  StepEvent: _step, SpaceEndEvent: _space_end, SelectedEvent: _selected,
                                  ExportedEvent: _exported, ErrorEvent: _error}


def reduce(snap: Snapshot, event) -> Snapshot:
    fn = REDUCERS.get(type(event))
    return fn(snap, event) if fn else snap
