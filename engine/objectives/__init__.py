"""Distillation objectives, registered by name (engine/objectives/registry.py).

Each is a small class over a MatchContext with `updates_per_iteration`, `start_iteration()`,
`loss_and_grad(syn, labels) -> (loss, dloss/dsyn)`, `after_update(syn, labels, update)` and
`state_dict()/load_state_dict()` for what must survive a checkpoint. Objectives see detached images
and return the image gradient, so the caller alone decides how it reaches the parameters (pixels
directly, or through a generator in one pass or in chunks).

Every objective's module registers an ObjectiveSpec at its bottom; importing the modules here is what
registers them. A new objective is its module plus one import line below.
"""
from __future__ import annotations

from .context import MatchContext
from .registry import (ObjectiveSpec, PixelAdam, build_for_run, get_objective, objective_names, register, registered,
                       unregister)

# Imported in this order, they register dm, dc, dsa, tesla, sre2l (objective_names() keeps registration order).
from .dm import DMObjective, DMParams, dm_loss  # noqa: E402
from .dc import DCObjective, DCParams, dc_loss, gradient_distance, loops_for_ipc  # noqa: E402
from .tesla import TeslaObjective, TeslaParams, tesla_gradients  # noqa: E402
from .sre2l import SRe2LObjective, SRe2LParams  # noqa: E402


def __getattr__(name: str):
    # OBJECTIVES is read from the registry on every access, so objectives registered later are listed too.
    if name == "OBJECTIVES":
        return objective_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_objective(name: str) -> None:
    get_objective(name)


def uses_dsa(name: str) -> bool:
    """DC matches without augmentation; DSA and DM (as in the DM paper) use siamese augmentation, and
    TESLA augments its student's minibatches (unseeded-style, per sample)."""
    return get_objective(name).uses_dsa


def build_objective(name: str, ctx: MatchContext, ipc: int, **overrides):
    return get_objective(name).build(ctx, ipc, **overrides)


__all__ = ["OBJECTIVES", "DCObjective", "DCParams", "DMObjective", "DMParams", "MatchContext", "ObjectiveSpec",
           "PixelAdam", "SRe2LObjective", "SRe2LParams", "TeslaObjective", "TeslaParams", "build_for_run",
           "build_objective", "check_objective", "dc_loss",
           "dm_loss", "get_objective", "gradient_distance", "loops_for_ipc", "objective_names", "register",
           "registered", "tesla_gradients", "unregister", "uses_dsa"]
