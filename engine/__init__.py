"""H-PD Studio's engine: everything computational, no UI. The UI (hpd_app) uses only these names.

Names resolve lazily (PEP 562) so that `python -m engine --help` does not pay for torch-heavy imports
(grad-cam alone pulls in OpenCV and SciPy).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Run": "engine.run", "RunConfig": "engine.run", "RunController": "engine.run", "EventKind": "engine.run",
    "Event": "engine.run", "StateEvent": "engine.run", "StepEvent": "engine.run", "SpaceEndEvent": "engine.run",
    "SelectedEvent": "engine.run", "ExportedEvent": "engine.run", "ErrorEvent": "engine.run",
    "read_events": "engine.run", "read_space_file": "engine.run",
    "PlanEvent": "engine.run", "SpaceStartEvent": "engine.run", "from_json": "engine.run", "is_live": "engine.run",
    "METHODS": "engine.run", "SELECTIONS": "engine.run", "Turns": "engine.run",
    "OBJECTIVES": "engine.objectives", "get_objective": "engine.objectives",
    "list_datasets": "engine.data", "dataset_info": "engine.data", "DatasetError": "engine.data",
    "load_generator": "engine.generators", "load_classifier": "engine.classifiers",
    "cam_heatmaps": "engine.cam", "overlay": "engine.cam",
    "evaluate_synset": "engine.evaluate", "tune_allocator": "engine.runtime",
    "export_files": "engine.run.export", "resolve_device": "engine.cli.common",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
