"""Distillation objectives, registered by name.

Each is a small class over a MatchContext with `updates_per_iteration`, `start_iteration()`,
`loss_and_grad(syn, labels) -> (loss, dloss/dsyn)`, `after_update(syn, labels, update)` and
`state_dict()/load_state_dict()` for what must survive a checkpoint. Objectives see detached images
and return the image gradient, so the caller alone decides how it reaches the parameters (pixels
directly, or through a generator in one pass or in chunks).
"""
from __future__ import annotations

from pathlib import Path

from ..buffers import ExpertBuffers, load_buffers
from .context import MatchContext
from .dc import DCObjective, DCParams, dc_loss, gradient_distance, loops_for_ipc
from .dm import DMObjective, DMParams, dm_loss
from .tesla import TeslaObjective, TeslaParams, tesla_gradients



OBJECTIVES = ("dm", "dc", "dsa", "tesla")


def check_objective(name: str) -> None:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")


def uses_dsa(name: str) -> bool:
    """DC matches without augmentation; DSA and DM (as in the DM paper) use siamese augmentation, and
    TESLA augments its student's minibatches (unseeded-style, per sample)."""
    check_objective(name)
    return name in ("dsa", "dm", "tesla")


def _build_dm(ctx: MatchContext, ipc: int, **overrides) -> DMObjective:
    return DMObjective(DMParams(batch_real=ctx.batch_real), ctx)


def _build_dc(ctx: MatchContext, ipc: int, outer_loop: int | None = None, inner_loop: int | None = None,
              lr_net: float = 0.01) -> DCObjective:
    outer, inner = loops_for_ipc(ipc)
    params = DCParams(batch_real=ctx.batch_real, outer_loop=outer_loop or outer,
                      inner_loop=inner_loop or inner, lr_net=lr_net)
    return DCObjective(params, ctx)


def _build_tesla(ctx: MatchContext, ipc: int, buffers: ExpertBuffers | str | Path | None = None,
                 tesla: TeslaParams | None = None, **overrides) -> TeslaObjective:
    """`buffers`: loaded ExpertBuffers or their folder; `tesla`: parameters other than the defaults."""
    if buffers is None:
        raise ValueError("TESLA needs expert trajectories: pass buffers (make them with `python -m engine buffers`)")
    if not isinstance(buffers, ExpertBuffers):
        buffers = load_buffers(buffers)
    return TeslaObjective(tesla or TeslaParams(), ctx, buffers)


# DC and DSA share one implementation; whether the context carries DSA parameters makes the difference.
_BUILDERS = {"dm": _build_dm, "dc": _build_dc, "dsa": _build_dc, "tesla": _build_tesla}


def build_objective(name: str, ctx: MatchContext, ipc: int, **overrides):
    check_objective(name)
    return _BUILDERS[name](ctx, ipc, **overrides)


__all__ = ["OBJECTIVES", "DCObjective", "DCParams", "DMObjective", "DMParams", "MatchContext",
           "TeslaObjective", "TeslaParams", "build_objective", "check_objective", "dc_loss", "dm_loss",
           "gradient_distance", "loops_for_ipc", "tesla_gradients", "uses_dsa"]
