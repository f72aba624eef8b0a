"""What an objective may use besides the synthetic images: real batches, fresh networks, randomness, and
a frozen teacher when the run was given one."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .. import augment
from ..augment import DSAParams
from ..data import RealSampler
from ..distributed import Distributed, Shard
from ..streams import Streams


@dataclass
class MatchContext:
    """Per-run services for objectives. `new_net(seed)` builds a fresh surrogate network on the device.

    Randomness comes from the run's named streams, one per consumer: `real` draws from "real" (the
    sampler holds it), network seeds and expert picks from "nets", DSA parameters from "dsa", minibatch
    orders from "order". Runs of different methods at one seed make the same calls, so they draw the
    same real batches, networks and augmentations at every step.

    `teacher` is a frozen classifier the run was handed (Run(..., classifier=...)); objectives that need
    one (SRe²L) use it before loading their own from the config's classifier spec. None: not given.

    `shard`: the images this process holds when a run is spread over processes (engine/distributed.py);
    None: all of them. A class held elsewhere still makes its draws (`skip_class`), so every stream is in
    the same state on every rank and each class sees the draws it would see in one process. `dist`: the
    processes, for objectives whose classes share a trained network or a student (DC/DSA, TESLA) and
    sum its gradient over them; one process by default.

    `precision`: the run's --precision. Under "bf16" the objectives that honour it (DM, DC/DSA) run the
    matching network's forward on the real images inside `real_autocast()` and cast what comes out back
    to float32; the synthetic side, whose gradient reaches the latents, stays float32. `embed`: under
    --compile, DM's real-side embedding compiled once for the run (every iteration's fresh network reuses it).
    """

    real: RealSampler
    new_net: Callable[[int], nn.Module]
    streams: Streams
    dsa: DSAParams | None
    batch_real: int = 256
    teacher: nn.Module | None = None
    shard: Shard | None = None
    dist: Distributed = field(default_factory=Distributed)
    precision: str = "fp32"
    embed: Callable | None = None  # embed(net, images): DM's real-side embedding; None: net.embed itself

    def real_autocast(self):
        """The context the real side's forward runs in: bf16 autocast on the device under --precision bf16,
        else nothing at all (fp32 takes exactly the code path it took before the flag existed)."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def device(self) -> torch.device:
        return self.real.device

    @property
    def num_classes(self) -> int:
        return self.real.info.num_classes

    def draw_seed(self) -> int:
        return int(torch.randint(2**31 - 1, (1,), generator=self.streams["nets"]))

    @property
    def dsa_stream(self) -> torch.Generator:
        return self.streams["dsa"]

    @property
    def order_stream(self) -> torch.Generator:
        return self.streams["order"]

    def holds(self, c: int) -> bool:
        return self.shard is None or self.shard.holds(c)

    def skip_class(self, c: int) -> None:
        """The draws class_pairs makes for class `c`, without loading or augmenting any image."""
        self.real.indices(c, self.batch_real)
        if self.dsa is not None:  # a siamese draw is one parameter set whatever the batch size
            side = self.real.info.resolution
            augment.sample(self.dsa, 1, side, side, self.dsa_stream, siamese=True)


def class_slices(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Indices of each class in a synthetic label vector (classes may be absent only in tests)."""
    return [torch.nonzero(labels == c).flatten() for c in range(num_classes)]


def class_pairs(syn: torch.Tensor, labels: torch.Tensor, ctx: MatchContext):
    """(class, real batch, synthetic images) per class present, siamese-augmented when ctx.dsa is set."""
    for c, idx in enumerate(class_slices(labels, ctx.num_classes)):
        if not ctx.holds(c):
            ctx.skip_class(c)
            continue
        if len(idx) == 0:
            continue
        real_c, syn_c = ctx.real.sample(c, ctx.batch_real), syn[idx]
        if ctx.dsa is not None:
            real_c, syn_c = augment.siamese_pair(real_c, syn_c, ctx.dsa, ctx.dsa_stream)
        yield c, real_c, syn_c


def autograd_loss_and_grad(loss_fn, syn: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(loss, dloss/dsyn) for an objective whose loss is one differentiable function of the images."""
    leaf = syn.detach().requires_grad_(True)
    loss = loss_fn(leaf, labels)
    (grad,) = torch.autograd.grad(loss, leaf)
    return float(loss.detach()), grad


class PerIterationObjective:
    """Base of objectives whose loss is one differentiable function of the images against a network
    made fresh every iteration (DM, DC/DSA): nothing outlives an iteration, so nothing to checkpoint."""

    def loss(self, syn: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss_and_grad(self, syn: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
        return autograd_loss_and_grad(self.loss, syn, labels)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
