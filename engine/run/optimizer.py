"""The optimiser of one optimisation space: the engine's SGD with momentum, or, for the pixels of an
objective that names one (SRe²L), Adam with a cosine rate to 0 and pixels clamped to [0, 1] after every
step (registry.PixelAdam).

A space builds its optimiser when it begins and drops it when it ends; the checkpoint is taken between
spaces, so an optimiser never has to outlive its space: a resumed run rebuilds it fresh at the start of
the space it reruns, exactly as the uninterrupted run built it. Its schedule position is the space's step
counter (st.step_in_space), not a state of its own, for the same reason.
"""
from __future__ import annotations

import math

import torch

from ..objectives.registry import PixelAdam


def cosine_lr(base: float, t: int, total: int) -> float:
    """SRe²L's schedule: (1 + cos(pi t / total)) / 2 * base, base at t = 0, 0 at t = total, no warm-up."""
    return 0.5 * (1.0 + math.cos(math.pi * t / total)) * base


class SpaceOptimizer:
    """`zero_grad()`, then `step(t)` at the space's step t: sets the scheduled rates (Adam only), steps,
    and clamps `clamped` into `bounds` (Adam only)."""

    def __init__(self, opt: torch.optim.Optimizer, total_steps: int, cosine: bool = False,
                 clamped: torch.Tensor | None = None, bounds: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.opt = opt
        self.total_steps = total_steps
        self.cosine = cosine
        self.clamped = clamped
        self.bounds = None if bounds is None else tuple(b.to(clamped.device, clamped.dtype) for b in bounds)
        self.base_lrs = [group["lr"] for group in opt.param_groups]

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def step(self, t: int) -> None:
        if self.cosine:
            for group, base in zip(self.opt.param_groups, self.base_lrs):
                group["lr"] = cosine_lr(base, t, self.total_steps)
        self.opt.step()
        if self.bounds is not None:
            with torch.no_grad():
                self.clamped.copy_(torch.maximum(torch.minimum(self.clamped, self.bounds[1]), self.bounds[0]))

    def state_dict(self) -> dict:
        return self.opt.state_dict()


def space_optimizer(params: list[dict], momentum: float, total_steps: int, pixels: torch.Tensor | None = None,
                    adam: PixelAdam | None = None, bounds: tuple[torch.Tensor, torch.Tensor] | None = None
                    ) -> SpaceOptimizer:
    """SGD over `params` (torch param groups), or, with `adam` and the space's `pixels`, SRe²L's Adam
    clamping `pixels` into `bounds`."""
    if adam is None or pixels is None:
        return SpaceOptimizer(torch.optim.SGD(params, momentum=momentum), total_steps)
    opt = torch.optim.Adam(params, betas=adam.betas, eps=adam.eps)
    return SpaceOptimizer(opt, total_steps, cosine=True, clamped=pixels, bounds=bounds)
