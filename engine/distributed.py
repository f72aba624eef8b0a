"""Several processes under torchrun: which process this is, its share of the classes, and the few
collectives a class-sharded run needs.

A `Distributed` is passed to whoever needs it (never a module global): a single process is
`Distributed()` (rank 0 of 1), whose collectives are identities, so a run without torchrun takes
exactly the code path and the numbers it took before. Under torchrun, rank 0 alone writes; every rank
holds the images of its classes (a `Shard`) and the collectives are scalar sums, an agreed flag, rows
gathered to rank 0 at checkpoints and previews, rank 0's objects sent to all, and the sum of a tensor
(a network gradient that each rank computed on its own images, DC/DSA's and TESLA's). Evaluation and
expert training spread independent jobs instead (`spread`: a network or an expert each, dealt round-robin,
results gathered to every rank); what rank 0 alone reads reaches the others through `from_first`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence, TypeVar

import torch
import torch.distributed as dist

TORCHRUN_KEYS = ("RANK", "WORLD_SIZE")
T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    # Where collective tensors live: nccl moves only CUDA tensors, gloo CPU ones.
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Rank 0 alone writes the run folder, so the folder is one run's, whatever the world size."""
        return self.rank == 0

    def sum(self, value: float | None) -> float | None:
        """The sum over ranks of a per-rank part (a loss or distance summed over classes)."""
        if not self.active or value is None:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t)

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """The elementwise sum over ranks of a per-rank tensor (each rank's images' share of a gradient on
        a network every rank holds alike); `t` itself in one process. `t` is left as it is."""
        if not self.active:
            return t
        total = t.detach().to(self.device, copy=True)
        dist.all_reduce(total)
        return total.to(t.device)

    def any(self, flag: bool) -> bool:
        """True on every rank if it is on one: a decision every rank must take together (a collective)."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t)

    def share(self, obj):
        """Rank 0's `obj` on every rank (what rank 0 alone read or computed)."""
        if not self.active:
            return obj
        box = [obj if self.writes else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def from_first(self, read: Callable[[], T]) -> T:
        """`read()` run by rank 0 alone (a look at the folder, which rank 0 alone writes), its result on every
        rank. A ValueError it raises (a folder of another run, a bad manifest) is raised on every rank, so no
        rank is left waiting in a collective for one that gave up. One process: `read()` itself."""
        if not self.active:
            return read()
        outcome = None
        if self.writes:
            try:
                outcome = ("ok", read())
            except ValueError as exc:
                outcome = ("error", type(exc), str(exc))
        outcome = self.share(outcome)
        if outcome[0] == "error":
            raise outcome[1](outcome[2])
        return outcome[1]

    def gather_objects(self, obj) -> list:
        """Every rank's `obj` (picklable), in rank order, on every rank: each rank knows the whole result and
        takes the same next step. `[obj]` in one process."""
        if not self.active:
            return [obj]
        box = [None] * self.world
        dist.all_gather_object(box, obj)
        return box

    def mine(self, count: int) -> range:
        """The jobs 0..count-1 this rank takes: dealt round-robin (rank r: r, r + world, ...)."""
        return range(self.rank, count, self.world)

    def spread(self, items: Sequence, work: Callable) -> list:
        """`[work(x) for x in items]`, each rank doing its dealt share (`mine`), the results in `items`' order on
        every rank. For independent jobs whose result depends on the job alone (a network of a fixed seed),
        so the list is the one a single process makes; one process makes exactly that list itself."""
        if not self.active:
            return [work(x) for x in items]
        done = self.gather_objects([work(items[j]) for j in self.mine(len(items))])
        return [done[j % self.world][j // self.world] for j in range(len(items))]

    def progress(self, job: int, per_job: int, done: int) -> int:
        """Units done overall as rank 0 sees them `done` units into its dealt job `job` (of `per_job` units
        each): its own earlier jobs and this one, times the processes, which work as fast meanwhile. In one
        process, exactly the jobs before `job` and `done` (the count a single process reports)."""
        return self.world * ((job // self.world) * per_job + done)

    def gather_rows(self, part: torch.Tensor, shard: "Shard") -> torch.Tensor | None:
        """The whole tensor, rows in the single-process order, on rank 0 (None on the others).

        Each rank fills its rows of a zero tensor and rank 0 receives the sum: every row has exactly one
        nonzero contributor and x + 0 == x, so the result is exact, and unequal shards need no padding."""
        if not self.active:
            return part
        full = torch.zeros(shard.total, *part.shape[1:], dtype=part.dtype, device=self.device)
        full[shard.rows.to(self.device)] = part.detach().to(self.device)
        dist.reduce(full, dst=0)
        return full.to(part.device) if self.writes else None

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def launched(env: Mapping[str, str] = os.environ) -> bool:
    """Whether torchrun started this process (it sets RANK and WORLD_SIZE for every worker)."""
    return all(k in env for k in TORCHRUN_KEYS)


def world_size(env: Mapping[str, str] = os.environ) -> int:
    return int(env["WORLD_SIZE"]) if launched(env) else 1


def process_device(device: torch.device, env: Mapping[str, str] = os.environ) -> torch.device:
    """A CUDA run on several processes takes one GPU per process (LOCAL_RANK), whatever index was given."""
    if device.type != "cuda" or world_size(env) == 1:
        return device
    return torch.device("cuda", int(env.get("LOCAL_RANK", "0")))


def from_env(device: torch.device, env: Mapping[str, str] = os.environ) -> Distributed:
    """Join torchrun's process group (env:// rendezvous); one process without torchrun, or with one worker."""
    world = world_size(env)
    if world == 1:
        return Distributed()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return init(int(env["RANK"]), world, device)


def init(rank: int, world: int, device: torch.device, init_method: str = "env://") -> Distributed:
    """The process group for `device`: nccl on CUDA, gloo otherwise (the tests spawn with a file:// init)."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)
    return Distributed(rank, world, device)


@dataclass(frozen=True, eq=False)
class Shard:
    """This rank's images: `rows` index the whole, class-major set (ascending), `labels` and `classes`
    are the whole set's (dataset label, generator class), `held` the classes whose images are here."""

    rows: torch.Tensor
    labels: torch.Tensor
    classes: torch.Tensor
    held: frozenset[int]

    @property
    def total(self) -> int:
        return len(self.labels)

    @property
    def whole(self) -> bool:
        return len(self.rows) == self.total

    def holds(self, c: int) -> bool:
        return c in self.held

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a whole-set tensor (the tensor itself when the rank holds everything)."""
        return t if self.whole else t[self.rows.to(t.device)]

    def find(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(which entries of whole-set rows `index` this rank holds, their positions in this shard): a
        minibatch drawn over the whole set, split by where its images are (any split, unlike `local`)."""
        if self.whole:
            return torch.arange(len(index), device=index.device), index
        rows = self.rows.to(index.device)
        pos = torch.searchsorted(rows, index).clamp(max=len(rows) - 1)
        at = torch.nonzero(rows[pos] == index).flatten()
        return at, pos[at]

    def local(self, index: torch.Tensor) -> torch.Tensor | None:
        """Positions in this shard of whole-set rows `index`, or None when another rank holds them."""
        if self.whole:
            return index
        rows = self.rows.to(index.device)
        pos = torch.searchsorted(rows, index).clamp(max=len(rows) - 1)
        here = rows[pos] == index
        if not here.any():
            return None
        if not here.all():  # the shard is built from whole groups, so a group is never split
            raise RuntimeError("a coupled group of images is split over processes")
        return pos


def whole_shard(labels: torch.Tensor, classes: torch.Tensor, num_classes: int) -> Shard:
    return Shard(torch.arange(len(labels), device=labels.device), labels, classes, frozenset(range(num_classes)))


def class_shard(labels: torch.Tensor, classes: torch.Tensor, num_classes: int, group: int,
                dist_: Distributed) -> Shard:
    """The classes of this rank: consecutive groups of `group` classes (those an objective's loss couples,
    e.g. one SRe²L BatchNorm batch) dealt round-robin to the ranks, with every image of those classes."""
    if not dist_.active:
        return whole_shard(labels, classes, num_classes)
    check_groups(num_classes, group, dist_.world)
    held = frozenset(c for c in range(num_classes) if (c // group) % dist_.world == dist_.rank)
    mask = torch.tensor([int(c) in held for c in labels.tolist()], device=labels.device)
    return Shard(torch.nonzero(mask).flatten(), labels, classes, held)


def check_groups(num_classes: int, group: int, world: int) -> None:
    """Refuse more processes than groups of `group` classes: a process without a class would idle."""
    groups = -(-num_classes // group)
    if groups < world:
        raise ValueError(f"{num_classes} classes in groups of {group} make {groups} share(s), too few for "
                         f"{world} processes; run with --nproc-per-node {groups} or fewer")
