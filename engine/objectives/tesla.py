"""Trajectory matching (MTT, Cazenavette et al. 2022) with TESLA's constant-memory gradient (Cui et al. 2023).

A student network starts at an expert's snapshot theta0 = snapshot[start] and takes `syn_steps` SGD steps
of learning rate `syn_lr` (itself learned) on minibatches of the augmented synthetic images. The loss is
how far it ends from the expert `expert_epochs` epochs later, relative to how far the expert travelled:

    L = ||theta_N - theta*||^2 / ||theta0 - theta*||^2,   theta_N = theta0 - syn_lr * sum_i g_i.

TESLA's gradient: L depends on each step's gradient g_i through the sum only, so dL/dg_i is one vector,
c = 2 syn_lr (syn_lr sum_j g_j - theta0 + theta*) / ||theta0 - theta*||^2. The unroll stores theta_i and
the detached g_i; the replay recomputes g_i at theta_i on the same augmented minibatch and backpropagates
c . g_i into the images, one step's graph at a time. Like TESLA's own derivation this treats each theta_i
as a constant of the images (the Hessian terms through which earlier steps move later parameters are not
followed); for one step it is MTT's full gradient. syn_lr's gradient, dL/dsyn_lr = -2 sum_j g_j .
(theta0 - syn_lr sum_j g_j - theta*) / ||theta0 - theta*||^2, is exact under the same model.

On several processes (ctx.shard) the synthetic set is sharded, not the experts: a run on N processes
equals a one-process run of the same seed (up to float rounding), which one expert per process with the
latent gradients summed would not (it would match N experts per step). Every process draws the whole
set's plan (minibatches, augmentations) and the same expert. A step's gradient g_i is a mean of per-image
terms (the student normalises per sample), so each process computes its images' share of it and the
shares are summed over processes (one all-reduce of the flat parameters per student step): every process
unrolls the same theta_i and gets the same c. In the replay the image gradient of c . g_i with respect
to an image is that image's own term's, so each process replays its own images with no communication and
its latents get exactly their rows of the one-process gradient. This is the "shard the synthetic set"
option without gathering images: the only collective carries the student's parameters, not the images.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .. import augment
from ..buffers import ExpertBuffers, load_buffers, unflatten_params
from ..distributed import Distributed, Shard
from .context import MatchContext
from .registry import ObjectiveSpec, register


@dataclass(frozen=True)
class TeslaParams:
    syn_steps: int = 20
    expert_epochs: int = 3
    max_start_epoch: int = 5      # start epoch uniform in [0, max_start_epoch)
    lr_teacher: float = 0.01      # initial syn_lr
    lr_lr: float = 1e-6           # SGD on syn_lr
    lr_momentum: float = 0.5
    batch_syn: int | None = None  # None: every synthetic image in each student step

    def __post_init__(self) -> None:
        for name in ("syn_steps", "expert_epochs", "max_start_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_syn is not None and self.batch_syn < 1:
            raise ValueError(f"batch_syn must be at least 1 or None, got {self.batch_syn}")
        if self.lr_teacher < 0 or self.lr_lr < 0 or not 0 <= self.lr_momentum < 1:
            raise ValueError("need lr_teacher >= 0, lr_lr >= 0 and 0 <= lr_momentum < 1")

    def check_trajectory(self, epochs: int) -> None:
        """A trajectory of `epochs` + 1 snapshots must hold snapshot[start + expert_epochs] for every start."""
        longest = epochs + 1 - self.expert_epochs
        if self.max_start_epoch > longest:
            raise ValueError(f"max_start_epoch {self.max_start_epoch} is too large: trajectories of {epochs + 1} "
                             f"snapshots with expert_epochs {self.expert_epochs} allow at most {max(longest, 0)}")


@dataclass(frozen=True)
class StudentStep:
    """One student step's minibatch (indices into the synthetic set) and its DSA draw (None: no DSA).
    `batch`: the whole minibatch's size when `index` is only the part of it this process holds (None:
    all of it is here)."""

    index: torch.Tensor
    draw: augment.Draw | None
    batch: int | None = None

    def held(self, shard: Shard) -> "StudentStep":
        """This process's part of a step planned over the whole set, with its images' DSA parameters."""
        at, pos = shard.find(self.index)
        return StudentStep(pos, None if self.draw is None else self.draw.rows(at), len(self.index))


def plan_steps(num_images: int, steps: int, batch: int, image_size: tuple[int, int],
               dsa: augment.DSAParams | None, order: torch.Generator,
               dsa_stream: torch.Generator | None = None) -> list[StudentStep]:
    """Minibatches walk through shuffled passes over the set (the last of a pass may be short), each with
    per-sample DSA parameters; drawn up front so the replay can reuse them exactly. Orders come from
    `order`, DSA parameters from `dsa_stream` (default: the same generator)."""
    dsa_stream = order if dsa_stream is None else dsa_stream
    plan: list[StudentStep] = []
    chunks: list[torch.Tensor] = []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.randperm(num_images, generator=order).split(batch))
        index = chunks.pop(0)
        draw = None if dsa is None else augment.sample(dsa, len(index), *image_size, dsa_stream, siamese=False)
        plan.append(StudentStep(index, draw))
    return plan


@dataclass(frozen=True)
class TeslaGradients:
    loss: float
    syn_grad: torch.Tensor
    lr_grad: float


def student_grad(net: nn.Module, theta: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                 step: StudentStep, create_graph: bool = False) -> torch.Tensor:
    """d cross-entropy / d theta on the step's augmented minibatch, at flat parameters `theta`."""
    x = images[step.index.to(images.device)]
    if step.draw is not None:
        x = augment.apply(x, step.draw)
    leaf = theta if theta.requires_grad else theta.detach().requires_grad_(True)
    logits = functional_call(net, unflatten_params(leaf, net), (x,))
    y = labels[step.index.to(labels.device)]
    # A part of a minibatch contributes its share of the whole minibatch's mean.
    if step.batch is None:
        loss = F.cross_entropy(logits, y)
    else:
        loss = F.cross_entropy(logits, y, reduction="sum") / step.batch
    (grad,) = torch.autograd.grad(loss, leaf, create_graph=create_graph)
    return grad


def tesla_gradients(net: nn.Module, syn: torch.Tensor, labels: torch.Tensor, theta0: torch.Tensor,
                    target: torch.Tensor, syn_lr: float, plan: list[StudentStep],
                    dist: Distributed | None = None) -> TeslaGradients:
    """The loss, dL/dsyn (TESLA's replay) and dL/dsyn_lr for one student unroll along `plan`. On several
    processes (`dist`), `syn` and `plan` are this process's images and parts of the steps; the loss and
    dL/dsyn_lr are then the whole set's, the same on every process."""
    syn = syn.detach()
    thetas, total = _unroll(net, syn, labels, theta0, syn_lr, plan, dist or Distributed())
    scale = (theta0 - target).pow(2).sum()
    residual = theta0 - syn_lr * total - target
    coef = -2 * syn_lr * residual / scale  # dL/dg_i, identical for every step
    syn_grad = _replay(net, syn, labels, thetas, plan, coef)
    lr_grad = -2 * (total * residual).sum() / scale
    return TeslaGradients(float(residual.pow(2).sum() / scale), syn_grad, float(lr_grad))


def _unroll(net: nn.Module, syn: torch.Tensor, labels: torch.Tensor, theta0: torch.Tensor, syn_lr: float,
            plan: list[StudentStep], dist: Distributed) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The parameters each step starts from, and the sum of the (detached) step gradients."""
    theta, total, thetas = theta0, torch.zeros_like(theta0), []
    for step in plan:
        thetas.append(theta)
        share = student_grad(net, theta, syn, labels, step) if len(step.index) else torch.zeros_like(theta)
        grad = dist.sum_tensor(share)  # the processes' shares of the minibatch gradient
        total = total + grad
        theta = theta - syn_lr * grad
    return thetas, total


def _replay(net: nn.Module, syn: torch.Tensor, labels: torch.Tensor, thetas: list[torch.Tensor],
            plan: list[StudentStep], coef: torch.Tensor) -> torch.Tensor:
    leaf = syn.requires_grad_(True)
    syn_grad = torch.zeros_like(syn)
    for theta, step in zip(thetas, plan):
        if not len(step.index):
            continue  # none of this step's images is here
        grad = student_grad(net, theta, leaf, labels, step, create_graph=True)
        # d(coef . g_i)/dsyn = (dL/dg_i) . (dg_i/dsyn): this step's share of the image gradient.
        (part,) = torch.autograd.grad((grad * coef).sum(), leaf)
        syn_grad += part
    return syn_grad


class TeslaObjective:
    """One update per iteration: a student unrolled from a random expert and start epoch.

    syn_lr and its optimiser live as long as the object, so a run keeps one objective across spaces.
    """

    updates_per_iteration = 1

    def __init__(self, params: TeslaParams, ctx: MatchContext, buffers: ExpertBuffers):
        params.check_trajectory(buffers.epochs)
        self.params, self.ctx, self.buffers = params, ctx, buffers
        self.net = ctx.new_net(0)  # only its structure is used: functional_call supplies the parameters
        buffers.check_student(self.net, ctx.real.info.name)
        self._syn_lr = torch.tensor(params.lr_teacher, dtype=torch.float64, requires_grad=True)
        self._lr_opt = torch.optim.SGD([self._syn_lr], lr=params.lr_lr, momentum=params.lr_momentum)
        self.expert: int | None = None
        self.start: int | None = None

    @property
    def syn_lr(self) -> float:
        return float(self._syn_lr.detach())

    def start_iteration(self) -> None:
        gen = self.ctx.streams["nets"]
        self.expert = int(torch.randint(len(self.buffers), (1,), generator=gen))
        self.start = int(torch.randint(self.params.max_start_epoch, (1,), generator=gen))

    def loss_and_grad(self, syn: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
        if self.expert is None:
            raise RuntimeError("start_iteration() must pick an expert before loss_and_grad()")
        theta0, target = (self.buffers.snapshot(self.expert, epoch).to(syn.device, syn.dtype)
                          for epoch in (self.start, self.start + self.params.expert_epochs))
        shard = self.ctx.shard
        total = len(syn) if shard is None else shard.total
        plan = plan_steps(total, self.params.syn_steps, self.params.batch_syn or total, tuple(syn.shape[2:]),
                          self.ctx.dsa, self.ctx.order_stream, self.ctx.dsa_stream)
        if shard is not None:
            plan = [step.held(shard) for step in plan]
        result = tesla_gradients(self.net, syn, labels, theta0, target, self.syn_lr, plan, self.ctx.dist)
        self._lr_opt.zero_grad(set_to_none=True)
        self._syn_lr.grad = torch.tensor(result.lr_grad, dtype=torch.float64)
        self._lr_opt.step()
        # Every process has the whole set's loss and the run sums the processes' losses: rank 0 reports it.
        return (result.loss if self.ctx.dist.writes else 0.0), result.syn_grad

    def after_update(self, current, labels: torch.Tensor, update: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"syn_lr": self.syn_lr, "lr_optimizer": self._lr_opt.state_dict(),
                "buffers": self.buffers.fingerprint(), "expert": self.expert, "start": self.start}

    def load_state_dict(self, state: dict) -> None:
        if json.loads(json.dumps(state["buffers"])) != self.buffers.fingerprint():
            raise ValueError("this checkpoint was made with other expert buffers "
                             f"({state['buffers'].get('files')}); load the same buffer folder to resume")
        with torch.no_grad():
            self._syn_lr.fill_(state["syn_lr"])
        self._lr_opt.load_state_dict(state["lr_optimizer"])
        self.expert, self.start = state["expert"], state["start"]


def build_tesla(ctx: MatchContext, ipc: int, buffers: ExpertBuffers | str | Path | None = None,
                tesla: TeslaParams | None = None, **overrides) -> TeslaObjective:
    """`buffers`: loaded ExpertBuffers or their folder; `tesla`: parameters other than the defaults."""
    if buffers is None:
        raise ValueError("TESLA needs expert trajectories: pass buffers (make them with `python -m engine buffers`)")
    if not isinstance(buffers, ExpertBuffers):
        buffers = load_buffers(buffers)
    return TeslaObjective(tesla or TeslaParams(), ctx, buffers)


def tesla_options(config) -> dict:
    """Called by RunConfig's validation too, so a run without buffers is refused before any work."""
    if not config.buffers:
        raise ValueError("TESLA needs expert trajectories: pass --buffers DIR (make them with `python -m engine buffers`)")
    return {"buffers": config.buffers, "tesla": TeslaParams(
        syn_steps=config.syn_steps, expert_epochs=config.expert_epochs, max_start_epoch=config.max_start_epoch)}


register(ObjectiveSpec(
    name="tesla", label="TESLA: trajectory matching (MTT, constant memory)", params=TeslaParams,
    uses_dsa=True,  # the student's minibatches are augmented (per sample, not siamese)
    latent_lr=(10.0, 1e4),  # (W+, f): paper Tables 19-21 (dd_methods_facts.md 1.4)
    pixel_lr=1000.0,  # MTT's pixel rate
    steps_per_space=100,  # the paper's steps per optimisation space
    class_group=1,  # any split of the images: the student's gradient is summed over processes
    build=build_tesla, options=tesla_options))
