"""What a step moves: counters, latents, the space records, the best candidate and the selection.

`state_dict()` holds what survives a checkpoint (taken between spaces, so per-space working values such
as the optimiser and the best candidate are not in it); `load_state_dict()` checks what it is given and
says in one sentence what is wrong.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from ..distributed import Shard
from .optimizer import SpaceOptimizer
from .spaces import SpaceRecord


@dataclass
class RunState:
    status: str = "created"
    space_index: int = 0
    step_in_space: int = 0
    steps_done: int = 0
    elapsed_s: float = 0.0
    ws: torch.Tensor | None = None
    f: torch.Tensor | None = None
    spaces: list[SpaceRecord] = field(default_factory=list)
    selected_space: int | None = None
    selection_reason: str | None = None
    scheme: str | None = None
    # Working values of the space in progress: rebuilt when a space begins, never checkpointed.
    best: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    best_loss: float | None = None
    opt: SpaceOptimizer | None = field(default=None, repr=False)  # SGD, or Adam on pixels (optimizer.py)
    rendered: torch.Tensor | None = field(default=None, repr=False)  # the current latents' images, once per step
    last_preview: float = 0.0  # time.monotonic() of the last preview: slow steps preview by time too

    @property
    def finished(self) -> bool:
        return bool(self.spaces) and self.space_index >= len(self.spaces)

    def state_dict(self) -> dict:
        return {
            "space_index": self.space_index, "steps_done": self.steps_done, "elapsed_s": self.elapsed_s,
            "ws": self.ws.detach().cpu(), "f": self.f.detach().cpu(),
            "spaces": json.dumps([s.to_json() for s in self.spaces]),
            "selected_space": -1 if self.selected_space is None else self.selected_space,
            "selection_reason": self.selection_reason or "",
        }

    def load_state_dict(self, state: dict, device: torch.device, shard: Shard | None = None) -> None:
        """`shard`: this process's rows of the saved whole set (None or whole: all of them)."""
        missing = [k for k in ("space_index", "steps_done", "elapsed_s", "ws", "f", "spaces") if k not in state]
        if missing:
            raise ValueError(f"the run state lacks {', '.join(missing)}")
        spaces = [SpaceRecord.from_json(s) for s in json.loads(state["spaces"])]
        if [s.cuts for s in spaces] != [s.cuts for s in self.spaces]:
            raise ValueError("the saved run walked other generator cuts than this config plans "
                             f"({[list(s.cuts) for s in spaces]} vs {[list(s.cuts) for s in self.spaces]})")
        if not 0 <= state["space_index"] <= len(spaces):
            raise ValueError(f"the saved space index {state['space_index']} is outside 0..{len(spaces)}")
        ws, f = state["ws"], state["f"]
        if shard is not None and not shard.whole:
            if len(ws) != shard.total or len(f) != shard.total:
                raise ValueError(f"the saved latents hold {len(ws)} images, this run {shard.total} "
                                 "(another IPC or dataset)")
            ws, f = shard.take(ws), shard.take(f)
        if self.ws is not None and ws.shape != self.ws.shape:
            raise ValueError(f"the saved latents have shape {tuple(ws.shape)}, this run's "
                             f"{tuple(self.ws.shape)} (another IPC or generator)")
        self.space_index, self.steps_done, self.elapsed_s = state["space_index"], state["steps_done"], state["elapsed_s"]
        self.ws, self.f = ws.to(device), f.to(device)
        self.spaces = spaces
        selected = state.get("selected_space", -1)
        self.selected_space = None if selected < 0 else selected
        self.selection_reason = state.get("selection_reason") or None
        self.step_in_space = 0
