"""Pixel-space distillation: optimise the synthetic images themselves with DM, DC or DSA."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import objectives
from .augment import DSAParams
from .data import RealSampler, dataset_info, load_dataset
from .export import staged_folder, write_json, write_set
from .nets import get_network, list_networks
from .provenance import provenance

METHODS = ("pixel",)
INITS = ("real", "noise")
# Learning rates of the synthetic pixels and loop settings of the reference code (DC/DSA/DM papers).
PIXEL_LR = {"dm": 1.0, "dc": 0.1, "dsa": 0.1}


@dataclass(frozen=True)
class DistillConfig:
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    method: str = "pixel"
    objective: str = "dm"
    ipc: int = 1
    iterations: int = 200
    lr: float | None = None          # None: the reference value for the objective
    momentum: float = 0.5
    init: str = "real"
    batch_real: int = 256
    outer_loop: int | None = None    # DC/DSA; None: the papers' value for the IPC
    inner_loop: int | None = None
    lr_net: float = 0.01
    net: str = "convnet"
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        dataset_info(self.dataset)  # raises for an unknown name
        objectives.check_objective(self.objective)
        _check_choice("method", self.method, METHODS)
        _check_choice("init", self.init, INITS)
        _check_choice("network", self.net, list_networks())
        for name in ("ipc", "iterations", "batch_real"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")

    @property
    def pixel_lr(self) -> float:
        return self.lr if self.lr is not None else PIXEL_LR[self.objective]


def _check_choice(what: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(valid)}")


@dataclass
class DistillResult:
    images: torch.Tensor
    labels: torch.Tensor
    losses: list[float] = field(default_factory=list)
    iteration_s: list[float] = field(default_factory=list)


def initial_images(sampler: RealSampler, ipc: int, init: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-major synthetic images: random real ones, or Gaussian noise in normalised space."""
    real, labels = sampler.sample_all(ipc)
    if init == "noise":
        real = torch.randn(real.shape, generator=generator).to(real.device)
    return real.clone(), labels


def distill_pixels(config: DistillConfig, progress: Callable[[int, float], None] | None = None) -> DistillResult:
    """Run `config.iterations` iterations of the objective on the pixels; returns the final set."""
    device = torch.device(config.device)
    gen = torch.Generator().manual_seed(config.seed)
    sampler = RealSampler(load_dataset(config.dataset, "train", config.data_root), device, gen)
    info = sampler.info
    images, labels = initial_images(sampler, config.ipc, config.init, gen)
    images.requires_grad_(True)
    ctx = objectives.MatchContext(
        real=sampler, generator=gen, batch_real=config.batch_real,
        dsa=DSAParams() if objectives.uses_dsa(config.objective) else None,
        new_net=lambda seed: get_network(config.net, info.channels, info.num_classes, info.resolution,
                                         seed=seed).to(device))
    objective = objectives.build_objective(config.objective, ctx, config.ipc, outer_loop=config.outer_loop,
                                           inner_loop=config.inner_loop, lr_net=config.lr_net)
    opt = torch.optim.SGD([images], lr=config.pixel_lr, momentum=config.momentum)
    result = DistillResult(images, labels)
    for it in range(config.iterations):
        start = time.perf_counter()
        loss = run_iteration(objective, opt, lambda: images, labels)
        result.losses.append(loss)
        result.iteration_s.append(time.perf_counter() - start)
        if progress:
            progress(it + 1, loss)
    result.images = images.detach()
    return result


def run_iteration(objective, opt: torch.optim.Optimizer, render: Callable[[], torch.Tensor],
                  labels: torch.Tensor) -> float:
    """One iteration: `updates_per_iteration` optimiser steps; returns the mean loss of the updates."""
    objective.start_iteration()
    total = 0.0
    for update in range(objective.updates_per_iteration):
        opt.zero_grad(set_to_none=True)
        syn = render()
        loss, grad = objective.loss_and_grad(syn.detach(), labels)
        syn.backward(grad)
        opt.step()
        total += loss
        objective.after_update(lambda: _no_grad(render), labels, update)
    return total / objective.updates_per_iteration


def _no_grad(render: Callable[[], torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return render().detach()


def save_run(out: Path, config: DistillConfig, result: DistillResult, wall_s: float) -> None:
    info = dataset_info(config.dataset)
    with staged_folder(out) as folder:
        write_set(folder, result.images, result.labels, info)
        write_json(folder / "run.json", {
            "kind": "distill",
            "config": asdict(config),
            "seed": config.seed,
            "dataset": {"name": info.name, "classes": list(info.class_names), "mean": info.mean, "std": info.std,
                        "space": "normalised: (pixel/255 - mean) / std"},
            "provenance": provenance(config.device),
            "losses": result.losses,
            "iteration_s": result.iteration_s,
            "elapsed_s": wall_s,
        })
