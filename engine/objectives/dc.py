"""Gradient matching (DC, Zhao et al. 2021) and its siamese-augmented form (DSA, Zhao & Bilen 2021).

On several processes (ctx.shard) the matching loss is a sum of per-class terms against one network,
which every process draws alike (the "nets" stream): each process matches its classes only. Training
that network between updates needs the whole set: every process draws the whole set's minibatch order
and augmentations, takes the part of each minibatch it holds, and the network gradients of the parts
are summed over processes (one all-reduce per minibatch), so every process's network takes the
one-process steps (up to float rounding: the sum is taken in another order). This rests on the matching
networks normalising per sample (instance norm): a split minibatch gives each image its one-process logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .. import augment
from ..distributed import Distributed
from .context import MatchContext, PerIterationObjective, class_pairs
from .registry import ObjectiveSpec, register


@dataclass(frozen=True)
class DCParams:
    batch_real: int = 256
    outer_loop: int = 1      # synthetic updates per iteration, each against the same evolving network
    inner_loop: int = 1      # epochs of network training on the synthetic set between updates
    lr_net: float = 0.01
    batch_train: int = 256

    def __post_init__(self):
        if min(self.batch_real, self.outer_loop, self.inner_loop, self.batch_train) < 1:
            raise ValueError("batch_real, outer_loop, inner_loop and batch_train must be at least 1")


def loops_for_ipc(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) of the DC/DSA papers for an IPC."""
    return {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 10), 40: (40, 10), 50: (50, 10)}.get(ipc, (10, 50))


def gradient_distance(g_real: list[torch.Tensor], g_syn: list[torch.Tensor]) -> torch.Tensor:
    """DC's layer-wise distance: per output unit, 1 - cosine similarity; biases and norms ignored."""
    total = g_syn[0].new_zeros(())
    for gr, gs in zip(g_real, g_syn):
        if gs.dim() == 1:
            continue
        gr, gs = gr.reshape(gr.shape[0], -1), gs.reshape(gs.shape[0], -1)
        cos = (gr * gs).sum(-1) / (gr.norm(dim=-1) * gs.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


def dc_loss(syn: torch.Tensor, labels: torch.Tensor, net, ctx: MatchContext) -> torch.Tensor:
    """Sum over classes of the distance between network gradients on real and synthetic batches."""
    params = [p for p in net.parameters() if p.requires_grad]
    total = syn.new_zeros(())
    for c, real_c, syn_c in class_pairs(syn, labels, ctx):
        target = torch.full((len(real_c),), c, device=syn.device)
        with ctx.real_autocast():  # bf16 under --precision bf16; the loss and the matching stay float32
            real_out = net(real_c)
        g_real = torch.autograd.grad(F.cross_entropy(real_out.float(), target), params)
        g_syn = torch.autograd.grad(F.cross_entropy(net(syn_c), target[: len(syn_c)]), params, create_graph=True)
        total = total + gradient_distance([g.detach() for g in g_real], g_syn)
    return total


class DCObjective(PerIterationObjective):
    """`outer_loop` updates per iteration; between them the network trains `inner_loop` epochs on the set."""

    def __init__(self, params: DCParams, ctx: MatchContext):
        self.params = params
        self.ctx = ctx
        self.updates_per_iteration = params.outer_loop
        self.net = None
        self.opt = None

    def start_iteration(self) -> None:
        self.net = self.ctx.new_net(self.ctx.draw_seed())
        self.net.train()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=self.params.lr_net)

    def loss(self, syn: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return dc_loss(syn, labels, self.net, self.ctx)

    def after_update(self, current: Callable[[], torch.Tensor], labels: torch.Tensor, update: int) -> None:
        """Train the network on the updated set (`current()` renders it) unless this was the last update."""
        if update == self.params.outer_loop - 1:
            return  # the network is discarded after the last update; training it would be wasted work
        syn = current()
        for _ in range(self.params.inner_loop):
            self._train_epoch(syn, labels)

    def _train_epoch(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        shard = self.ctx.shard
        total = len(images) if shard is None else shard.total
        order = torch.randperm(total, generator=self.ctx.order_stream).to(images.device)
        for batch in order.split(self.params.batch_train):
            self.opt.zero_grad(set_to_none=True)
            if shard is None:
                self._whole_batch_loss(images, labels, batch).backward()
            else:
                self._shared_batch_backward(images, labels, batch)
            self.opt.step()

    def _whole_batch_loss(self, images: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        x = images[batch]
        if self.ctx.dsa is not None:
            x = augment.augment(x, self.ctx.dsa, self.ctx.dsa_stream)
        return F.cross_entropy(self.net(x), labels[batch])

    def _shared_batch_backward(self, images: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor) -> None:
        """The gradient of the whole minibatch's mean cross-entropy in every process's network: each
        backpropagates its images' share (their sum over the whole batch's size) and the shares are summed."""
        draw = None if self.ctx.dsa is None else augment.sample(
            self.ctx.dsa, len(batch), *images.shape[2:], self.ctx.dsa_stream, siamese=False)
        at, pos = self.ctx.shard.find(batch)
        if len(pos):
            x = images[pos] if draw is None else augment.apply(images[pos], draw.rows(at))
            (F.cross_entropy(self.net(x), labels[pos], reduction="sum") / len(batch)).backward()
        sum_grads(self.net, self.ctx.dist)


def sum_grads(net: torch.nn.Module, dist: Distributed) -> None:
    """Every parameter's gradient summed over processes, in one collective (a process that held no image
    of the minibatch adds zeros)."""
    params = list(net.parameters())
    flat = dist.sum_tensor(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                      for p in params]))
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.view_as(p)


def build_dc(ctx: MatchContext, ipc: int, outer_loop: int | None = None, inner_loop: int | None = None,
             lr_net: float = 0.01) -> DCObjective:
    """Loops not given (None) take the papers' values for the IPC."""
    outer, inner = loops_for_ipc(ipc)
    params = DCParams(batch_real=ctx.batch_real, outer_loop=outer_loop or outer,
                      inner_loop=inner_loop or inner, lr_net=lr_net)
    return DCObjective(params, ctx)


def dc_options(config) -> dict:
    return {"outer_loop": config.outer_loop, "inner_loop": config.inner_loop}


# DC and DSA share one implementation; whether the context carries DSA parameters makes the difference.
# Rates of (W+, f): paper Tables 19-21 (dd_methods_facts.md 1.4); pixel rate 0.1: the reference code's;
# 100 steps per space: the paper's.
# class_group 1: the loss is a sum over classes; the network they share is kept alike by _train_epoch.
register(ObjectiveSpec(
    name="dc", label="DC: gradient matching", params=DCParams, uses_dsa=False,
    latent_lr=(0.001, 1.0), pixel_lr=0.1, steps_per_space=100, build=build_dc, options=dc_options, class_group=1))
register(ObjectiveSpec(
    name="dsa", label="DSA: gradient matching with siamese augmentation", params=DCParams, uses_dsa=True,
    latent_lr=(0.001, 1.0), pixel_lr=0.1, steps_per_space=100, build=build_dc, options=dc_options, class_group=1))
