"""Typed events that describe a run, to any number of subscribers and to RUN_DIR/events.jsonl.

The first event of a run announces its plan (spaces, cuts, classes, normalisation, ...), so the log
alone describes the run: the studio builds the same snapshot from a live run's events and from a
folder's events.jsonl. The bus stamps every event's seq and time; a subscriber that raises is reported
as an error event and the run goes on.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, ClassVar


class EventKind(str, enum.Enum):
    PLAN = "plan"              # what the run will do: the first event of every run
    STATE = "state"            # the run changed state (running, paused, finished, ...)
    SPACE_START = "space_start"  # a space began: its learning rates and its initial latent's distance
    STEP = "step"              # one optimisation step finished
    SPACE_END = "space_end"    # an optimisation space finished and its selection is fixed
    SELECTED = "selected"      # the final selection changed (accuracy pick or the user's choice)
    EXPORTED = "exported"
    ERROR = "error"


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: ClassVar[EventKind]
    seq: int = 0               # stamped by the bus
    time: float = 0.0          # stamped by the bus


@dataclass(frozen=True)
class PlanEvent(Event):
    kind = EventKind.PLAN
    method: str
    objective: str
    selection: str
    ipc: int
    dataset: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    spaces: tuple[dict, ...]   # {"index", "cuts", "name", "shape"} per space, in order
    steps_per_space: int
    distance: bool             # whether the class-relevant distance is measured
    note: str = ""             # e.g. why the distance is not measured


@dataclass(frozen=True)
class StateEvent(Event):
    kind = EventKind.STATE
    state: str
    message: str = ""


@dataclass(frozen=True)
class SpaceStartEvent(Event):
    kind = EventKind.SPACE_START
    space: int
    cut: int
    lr_w: float
    lr_f: float
    scheme: str
    distance: float | None     # of the space's initial latent (its step 0)
    preview: str | None = None
    images: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StepEvent(Event):
    kind = EventKind.STEP
    space: int
    cut: int
    step: int                  # 1..steps within the space (0 is the space's initial latent)
    steps_done: int            # over the whole run
    loss: float | None         # of the latent this step started from (step - 1)
    distance: float | None     # of the latent this step produced
    best_step: int
    lr_w: float
    lr_f: float
    elapsed_s: float
    preview: str | None = None                        # a PNG under the run folder, every preview_every steps
    images: object = field(default=None, compare=False, repr=False)  # CPU tensor for in-process subscribers


@dataclass(frozen=True)
class SpaceEndEvent(Event):
    kind = EventKind.SPACE_END
    space: int
    cuts: tuple[int, ...]
    best_step: int
    best_distance: float | None
    accuracy: float | None
    selected_file: str
    images: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SelectedEvent(Event):
    kind = EventKind.SELECTED
    space: int
    reason: str                # "accuracy", "last", "user"


@dataclass(frozen=True)
class ExportedEvent(Event):
    kind = EventKind.EXPORTED
    space: int
    path: str


@dataclass(frozen=True)
class ErrorEvent(Event):
    kind = EventKind.ERROR
    message: str
    traceback: str
    source: str = "run"        # "run" (the run failed) or "subscriber" (a listener failed; the run went on)


EVENT_TYPES: dict[str, type[Event]] = {cls.kind.value: cls for cls in (
    PlanEvent, StateEvent, SpaceStartEvent, StepEvent, SpaceEndEvent, SelectedEvent, ExportedEvent, ErrorEvent)}

Subscriber = Callable[[Event], None]


class EventLogError(RuntimeError):
    """RUN_DIR/events.jsonl could not be appended to (disk full, folder gone or read-only)."""


class EventBus:
    """Stamps events, appends them (without tensors) to a JSONL file and delivers them in order."""

    def __init__(self, log_path: Path | None = None):
        self._subscribers: list[Subscriber] = []
        self._lock = threading.RLock()  # re-entrant: a failing subscriber's error event is emitted inside emit
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

    @property
    def seq(self) -> int:
        """The seq of the last event emitted."""
        return self._seq

    def restore_seq(self, seq: int) -> None:
        self._seq = seq

    def emit(self, event: Event) -> Event:
        """Stamp, log and deliver `event`; returns the stamped event. If the log cannot be written the
        event still reaches every subscriber, then EventLogError is raised: a run whose record is
        failing must end (as failed), not go on unrecorded."""
        log_error = None
        with self._lock:
            self._seq += 1
            event = dataclasses.replace(event, seq=self._seq, time=time.time())
            if self._log_path is not None:
                try:
                    with open(self._log_path, "a") as fh:
                        fh.write(json.dumps(to_json(event)) + "\n")
                except (OSError, TypeError, ValueError) as exc:
                    log_error = exc
            for fn in list(self._subscribers):
                try:
                    fn(event)
                except Exception as exc:  # one broken listener must not end the run or starve the others
                    try:
                        self._report(fn, event, exc)
                    except EventLogError as report_error:
                        log_error = log_error or report_error.__cause__ or report_error
        if log_error is not None:
            reason = getattr(log_error, "strerror", None) or type(log_error).__name__
            raise EventLogError(f"the run's event log could not be written ({reason})") from log_error
        return event

    def _report(self, fn: Subscriber, event: Event, exc: Exception) -> None:
        name = getattr(fn, "__qualname__", repr(fn))
        if isinstance(event, ErrorEvent) and event.source == "subscriber":
            print(f"event subscriber {name} failed on its own error report: {exc!r}", file=sys.stderr)
            return
        self.emit(ErrorEvent(f"an event subscriber ({name}) failed on a {event.kind.value} event: {exc}; "
                             "the run goes on", "".join(traceback.format_exception(exc)), source="subscriber"))


def to_json(event: Event) -> dict:
    # Not dataclasses.asdict: it would deep-copy the image tensors only to drop them.
    data = {f.name: getattr(event, f.name) for f in fields(event) if f.name != "images"}
    data["kind"] = event.kind.value
    return data


def from_json(data: dict) -> Event | None:
    """The typed event of one log line (None for a kind this version does not know)."""
    cls = EVENT_TYPES.get(data.get("kind"))
    if cls is None:
        return None
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in data.items() if k in names}
    for name in ("cuts", "classes", "mean", "std", "spaces"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    return cls(**values)


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
