"""The H-PD engine: a step-wise, pausable, resumable run through a generator's layers."""
from .config import METHODS, SELECTIONS, RunConfig
from .controller import RunController
from .events import (ErrorEvent, Event, EventKind, ExportedEvent, SelectedEvent, SpaceEndEvent, StateEvent,
                     StepEvent, read_events)
from .export import export_space, read_space_file
from .run import Run
from .spaces import SpaceRecord, plan_spaces

__all__ = ["METHODS", "SELECTIONS", "ErrorEvent", "Event", "EventKind", "ExportedEvent", "Run", "RunConfig",
           "RunController", "SelectedEvent", "SpaceEndEvent", "SpaceRecord", "StateEvent", "StepEvent",
           "export_space", "plan_spaces", "read_events", "read_space_file"]
