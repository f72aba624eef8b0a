"""What differs between H-PD, GLaD and Pixel, in one table: the plan of spaces, the steps per space,
the initial latents and which latents are trained. Everything else (the loop, selection, checkpoints,
export) is shared, so the three methods are compared with one rule changed, not three code paths."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..generators import LayeredGenerator
from .config import RunConfig
from .spaces import plan_spaces

# (config, generator, generator class per image, real sampler, streams) -> starting W+ latents [N, num_ws, w_dim]
LatentInit = Callable[[RunConfig, LayeredGenerator, torch.Tensor, object, object], torch.Tensor]


@dataclass(frozen=True)
class Method:
    name: str
    uses_gan: bool           # a pre-trained generator parameterises the images (else: PixelGenerator)
    trains_ws: bool          # the W+ latents are optimised besides the feature entering the space
    plan: Callable[[RunConfig, int], list[tuple[int, ...]]]     # (config, number of cuts) -> cut groups
    steps_per_space: Callable[[RunConfig, int], int]            # (config, number of cuts) -> steps
    init: LatentInit         # draws from the "latents" stream only


def _plan(cfg: RunConfig, num_cuts: int, method: str) -> list[tuple[int, ...]]:
    return plan_spaces(num_cuts, method, cfg.first_cut, cfg.last_cut, cfg.layers_per_space, cfg.glad_cut)


def _glad_steps(cfg: RunConfig, num_cuts: int) -> int:
    if cfg.glad_steps:
        return cfg.glad_steps
    return cfg.steps * len(_plan(cfg, num_cuts, "hpd"))  # the same total budget as H-PD on this generator


def _gan_ws(cfg: RunConfig, G: LayeredGenerator, classes: torch.Tensor, sampler, streams) -> torch.Tensor:
    gen = streams["latents"]
    c = torch.nn.functional.one_hot(classes, G.num_classes).float()
    if cfg.init_kind == "avg":
        return G.mean_ws(c, n=cfg.mean_ws_samples, generator=gen)
    with torch.no_grad():
        return G.mapping(torch.randn(len(classes), G.z_dim, generator=gen).to(classes.device), c)


def _pixel_ws(cfg: RunConfig, G: LayeredGenerator, classes: torch.Tensor, sampler, streams) -> torch.Tensor:
    """Pixel's "latents" are the images themselves, flattened: real training images or noise."""
    gen = streams["latents"]
    real, _ = sampler.sample_all(cfg.ipc, gen)
    pixels = torch.randn(real.shape, generator=gen).to(classes.device) if cfg.init_kind == "noise" else real
    return pixels.flatten(1).unsqueeze(1)


METHOD_TABLE: dict[str, Method] = {
    "hpd": Method("hpd", True, True, lambda c, n: _plan(c, n, "hpd"), lambda c, n: c.steps, _gan_ws),
    "glad": Method("glad", True, True, lambda c, n: _plan(c, n, "glad"), _glad_steps, _gan_ws),
    "pixel": Method("pixel", False, False, lambda c, n: _plan(c, n, "pixel"), lambda c, n: c.steps, _pixel_ws),
}


def get_method(name: str) -> Method:
    return METHOD_TABLE[name]
