"""run.json: a summary of (context, state) for scripts and people; the event log is the full record."""
from __future__ import annotations

from dataclasses import asdict

from .context import RunContext
from .state import RunState


def summary(ctx: RunContext, st: RunState) -> dict:
    cfg = ctx.config
    return {
        "config": asdict(cfg),
        "state": st.status,
        "method": cfg.method,
        "generator": cfg.generator_spec,
        "generator_weights": ctx.generator_weights,  # the exact snapshot or file (its sha256)
        "cuts": [{"index": c.index, "name": c.name, "shape": list(c.shape)} for c in ctx.G.layers],
        "spaces": [s.to_json() for s in st.spaces],
        "steps_per_space": ctx.steps_per_space,
        "steps_done": st.steps_done,
        "total_steps": ctx.total_steps,
        "selection_basis": cfg.selection_basis,
        "distance_measured": ctx.distance is not None,
        "distance_note": ctx.distance_note,
        "selected_space": st.selected_space,
        "selection_reason": st.selection_reason,
        "gradient_scheme": st.scheme,
        "holdout_per_class": cfg.holdout_per_class if cfg.accuracy_pick else 0,
        "dataset": {"name": ctx.info.name, "classes": list(ctx.info.class_names),
                    "mean": ctx.info.mean, "std": ctx.info.std},
        "losses": [x for s in st.spaces for x in s.losses if x is not None],
        "elapsed_s": st.elapsed_s,
        "provenance": ctx.provenance,
        "teacher": ctx.teacher,  # what the sre2l evaluation protocol loads (engine/teacher.py)
    }
