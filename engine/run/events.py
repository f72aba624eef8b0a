"""Typed events a run emits, to any number of subscribers and to RUN_DIR/events.jsonl."""
from __future__ import annotations

import enum
import json
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable


class EventKind(str, enum.Enum):
    STATE = "state"            # the run changed state (running, paused, finished, ...)
    STEP = "step"              # one optimisation step finished
    SPACE_END = "space_end"    # an optimisation space finished and its selection is fixed
    SELECTED = "selected"      # the final selection changed (accuracy pick or the user's choice)
    EXPORTED = "exported"
    ERROR = "error"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    seq: int
    time: float


@dataclass(frozen=True)
class StateEvent(Event):
    state: str
    message: str = ""


@dataclass(frozen=True)
class StepEvent(Event):
    space: int
    cut: int
    step: int                  # 1..steps within the space (0 is the space's initial latent)
    steps_done: int            # over the whole run
    loss: float | None
    distance: float | None
    best_step: int
    lr_w: float
    lr_f: float
    elapsed_s: float
    preview: str | None = None                        # a PNG under the run folder, every preview_every steps
    images: object = field(default=None, compare=False, repr=False)  # CPU tensor for in-process subscribers


@dataclass(frozen=True)
class SpaceEndEvent(Event):
    space: int
    cuts: tuple[int, ...]
    best_step: int
    best_distance: float | None
    accuracy: float | None
    selected_file: str
    images: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SelectedEvent(Event):
    space: int
    reason: str                # "accuracy", "last", "user"


@dataclass(frozen=True)
class ExportedEvent(Event):
    space: int
    path: str


@dataclass(frozen=True)
class ErrorEvent(Event):
    message: str
    traceback: str


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers events in order to subscribers and appends them (without tensors) to a JSONL file."""

    def __init__(self, log_path: Path | None):
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._log_path = log_path
        self._seq = 0

    def log_to(self, path: Path) -> None:
        """Start appending events to `path` (events emitted before this only reach subscribers)."""
        self._log_path = path

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(fn)
        return lambda: self._unsubscribe(fn)

    def _unsubscribe(self, fn: Subscriber) -> None:
        with self._lock:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def restore_seq(self, seq: int) -> None:
        self._seq = seq

    def emit(self, event: Event) -> None:
        if self._log_path is not None:
            with open(self._log_path, "a") as fh:
                fh.write(json.dumps(to_json(event)) + "\n")
        with self._lock:
            subscribers = list(self._subscribers)
        for fn in subscribers:
            fn(event)


def to_json(event: Event) -> dict:
    # Not dataclasses.asdict: it would deep-copy the image tensors only to drop them.
    data = {f.name: getattr(event, f.name) for f in fields(event) if f.name != "images"}
    data["kind"] = event.kind.value
    return data


def read_events(path: Path) -> list[dict]:
    """Events of a run folder, tolerating a torn last line of a run that is still writing."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out
