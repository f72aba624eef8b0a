"""What the page draws of one run: an immutable snapshot, replaced (never mutated) on every engine event.

Polls only read the latest snapshot, so they never wait for a step or touch torch; images are already
uint8 arrays here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

TERMINAL = ("finished", "failed", "stopped", "interrupted")  # interrupted: a folder whose process ended mid-run
# Not terminal: "suspended" (a paused run gave its device back; Resume queues it again).
LABELS = {"hpd": "H-PD", "glad": "GLaD", "pixel": "Pixel"}


@dataclass(frozen=True)
class CurvePoint:
    x: int                  # position on the run's step axis: space * steps_per_space + step
    space: int
    step: int               # within the space; 0 is the space's initial latent
    distance: float | None
    loss: float | None


@dataclass(frozen=True, eq=False)
class SpaceView:
    """A finished optimisation space: its selected latent's images and scores."""
    index: int
    name: str
    best_step: int | None
    best_distance: float | None
    accuracy: float | None
    images: np.ndarray | None = field(default=None, repr=False)   # [N, H, W, C] uint8


@dataclass(frozen=True, eq=False)
class Snapshot:
    run_id: str
    method: str
    state: str = "queued"
    message: str = ""
    source: str = "live"                      # live (this server runs it) or folder (read from disk)
    layers: tuple[str, ...] = ()              # the name of each space's first cut, in order
    steps_per_space: int = 0
    class_names: tuple[str, ...] = ()
    ipc: int = 1
    mean: tuple[float, ...] = (0.0,)          # the dataset's normalisation, to draw normalised images
    std: tuple[float, ...] = (1.0,)
    distance_measured: bool = True
    note: str = ""                            # from the plan, e.g. why the distance is not measured
    space: int = 0
    step: int = 0
    steps_done: int = 0
    elapsed_s: float = 0.0
    curve: tuple[CurvePoint, ...] = ()
    spaces: tuple[SpaceView, ...] = ()        # finished spaces, by index
    preview: np.ndarray | None = field(default=None, repr=False)
    preview_version: int = 0
    # Saved preview PNGs, (x on the step axis, space, step, path under the run folder), in step order:
    # what the step scrubber browses.
    previews: tuple[tuple[int, int, int, str], ...] = ()
    selected_space: int | None = None
    selection_reason: str | None = None
    export_path: str | None = None
    exported_space: int | None = None         # the layer whose set the last export holds
    warnings: tuple[str, ...] = ()            # listeners that failed while the run went on (last few)
    version: int = 0

    @property
    def label(self) -> str:
        return LABELS.get(self.method, self.method)

    @property
    def total_steps(self) -> int:
        return self.steps_per_space * len(self.layers)

    @property
    def steps_per_s(self) -> float:
        return self.steps_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def evolve(self, **changes) -> "Snapshot":
        return replace(self, version=self.version + 1, **changes)


def status_json(snap: Snapshot, queue_position: int | None) -> dict:
    """The `status` endpoint's answer: plain JSON, curves as parallel lists."""
    return {
        "run_id": snap.run_id, "method": snap.method, "state": snap.state, "message": snap.message,
        "source": snap.source, "queue_position": queue_position,
        "space": snap.space, "step": snap.step, "steps_done": snap.steps_done, "total_steps": snap.total_steps,
        "steps_per_space": snap.steps_per_space, "layers": list(snap.layers),
        "elapsed_s": round(snap.elapsed_s, 3), "steps_per_s": round(snap.steps_per_s, 3),
        "curves": {"x": [p.x for p in snap.curve], "space": [p.space for p in snap.curve],
                   "step": [p.step for p in snap.curve],
                   "distance": [p.distance for p in snap.curve], "loss": [p.loss for p in snap.curve]},
        "spaces": [{"index": s.index, "name": s.name, "best_step": s.best_step, "best_distance": s.best_distance,
                    "accuracy": s.accuracy} for s in snap.spaces],
        "selected_space": snap.selected_space, "selection_reason": snap.selection_reason,
        "export_path": snap.export_path, "distance_measured": snap.distance_measured, "note": snap.note,
        "warnings": list(snap.warnings),
    }
