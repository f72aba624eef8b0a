"""The H-PD engine: a step-wise, pausable, resumable run through a generator's layers.

Shape (after pytorch-ignite): `context.RunContext` is what a run is made of, built once; `state.RunState`
is what a step moves, with state_dict()/load_state_dict(); `loop` holds the step functions of (context,
state); `run.Run` owns the folder and the event bus; `controller.RunController` drives it on a thread.
Per-method differences are one table (`methods`); objectives come from their registry (engine.objectives).
"""
from .config import METHODS, SELECTIONS, RunConfig
from .context import RunContext, SpacePlan, build_context
from .controller import RunController
from .events import (ErrorEvent, Event, EventBus, EventKind, ExportedEvent, PlanEvent, SelectedEvent, SpaceEndEvent,
                     SpaceStartEvent, StateEvent, StepEvent, from_json, read_events, to_json)
from .export import export_files, read_space_file
from .lock import is_live
from .run import Run
from .spaces import SpaceRecord, plan_spaces
from .state import RunState
from .turns import Turns

__all__ = ["METHODS", "SELECTIONS", "ErrorEvent", "Event", "EventBus", "EventKind", "ExportedEvent", "PlanEvent",
           "Run", "RunConfig", "RunContext", "RunController", "RunState", "SelectedEvent", "SpaceEndEvent",
           "SpacePlan", "SpaceRecord", "SpaceStartEvent", "StateEvent", "StepEvent", "Turns", "build_context",
           "export_files", "from_json", "is_live", "plan_spaces", "read_events", "read_space_file",
           "to_json"]
