"""Evaluation protocol: train fresh networks on a synthetic set, test them on real data.

Three protocols are registered:
- `glad`: what GLaD and H-PD run (per-model lr, SGD 0.9 / 5e-4, linear warm-up over the first half then
  cosine to zero, weight EMA 0.995 which is the model tested, DSA during training, batch 256).
- `dc`: what DC/DSA/DM's reference code runs (lr 0.01, x0.1 at half, no EMA, DSA during training),
  the protocol behind the published Fashion-MNIST figures.
- `sre2l`: SRe²L's relabel (engine/relabel.py): the student learns a teacher's soft predictions (KL at
  temperature 20, x T²) of the random resized crops and flips it is shown, instead of hard labels and DSA;
  the optimiser, schedule, EMA and epochs are glad's, so the two differ only in labels and augmentation.
  It needs the teacher (`evaluate_synset(..., teacher=...)`; the suite loads the run's, engine/teacher.py).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, MultiStepLR, SequentialLR
from torch.optim.swa_utils import AveragedModel

from . import augment, relabel
from .data import DatasetInfo, ImageSet
from .nets import evaluation_lr, get_network


@dataclass(frozen=True)
class EvalProtocol:
    name: str
    epochs: int = 1000
    lr: float | None = None            # None: the model's own evaluation lr (GLaD's table)
    schedule: str = "warmup_cosine"    # or "step" (x0.1 at half)
    ema_decay: float | None = 0.995    # None: test the trained weights themselves
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_train: int = 256
    dsa: bool = True
    batch_test: int = 1000
    crop_flip: bool = False            # SRe²L's random resized crop + flip per image and minibatch
    soft_labels: bool = False          # train on the teacher's soft predictions instead of the labels
    temperature: float = relabel.TEMPERATURE
    # The arithmetic of the test passes: under bf16 autocast the test pass took 1.8-4.2x less time on
    # this CPU (AVX-512 bf16; ViT the most) and the same trained network's test accuracy moved by at
    # most 0.12 points (BENCHMARKS.md, "Evaluation test passes in bf16").
    test_precision: str = "fp32"
    # The arithmetic of training's forward and loss (bf16: autocast; weights, gradients and the optimiser
    # stay float32). Its paired accuracy check is in BENCHMARKS.md, "Evaluation training in bf16".
    train_precision: str = "fp32"

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"evaluation needs at least 1 epoch, got {self.epochs}")
        if self.schedule not in ("warmup_cosine", "step"):
            raise ValueError(f"unknown schedule {self.schedule!r}; choose warmup_cosine or step")
        if not self.temperature > 0:
            raise ValueError(f"the soft-label temperature must be positive, got {self.temperature}")
        for name in ("test_precision", "train_precision"):
            value = getattr(self, name)
            if value not in PRECISIONS:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be one of {', '.join(PRECISIONS)}, got {value!r}")

    def without_augmentation(self) -> "EvalProtocol":
        """The same recipe on the images as they are (DD-Ranking's ARS trains each set once this way too)."""
        return replace(self, dsa=False, crop_flip=False)

    def to_json(self) -> dict:
        """The protocol as results and cache keys record it. A protocol on hard labels without crops is
        written without the soft-label fields, as before they existed, so its earlier eval.json files and
        cached baselines still match."""
        data = asdict(self)
        if not self.soft_labels and not self.crop_flip:
            for name in ("crop_flip", "soft_labels", "temperature"):
                data.pop(name)
        for name in ("test_precision", "train_precision"):
            if data[name] == "fp32":  # as before the field existed: earlier results still match
                data.pop(name)
        return data


PRECISIONS = ("fp32", "bf16")

PROTOCOLS = {
    "glad": EvalProtocol("glad"),
    "dc": EvalProtocol("dc", lr=0.01, schedule="step", ema_decay=None),
    "sre2l": EvalProtocol("sre2l", dsa=False, crop_flip=True, soft_labels=True),
}


def get_protocol(name: str, epochs: int | None = None, test_precision: str | None = None,
                 train_precision: str | None = None) -> EvalProtocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}")
    protocol = PROTOCOLS[name]
    protocol = replace(protocol, epochs=epochs) if epochs else protocol
    protocol = replace(protocol, test_precision=test_precision) if test_precision else protocol
    return replace(protocol, train_precision=train_precision) if train_precision else protocol


@dataclass
class EvalResult:
    model: str
    protocol: dict
    accuracies: list[float]
    seeds: list[int]
    train_images: int
    test_images: int
    wall_s: float
    test_s: float = 0.0                # of wall_s, the time spent in test passes
    mean: float = field(init=False)
    std: float = field(init=False)

    def __post_init__(self):
        t = torch.tensor(self.accuracies, dtype=torch.float64)
        self.mean = float(t.mean())
        self.std = float(t.std(unbiased=False)) if len(t) > 1 else 0.0

    def to_json(self) -> dict:
        return asdict(self) | {"mean": self.mean, "std": self.std}


@dataclass(frozen=True, eq=False)
class PreparedTest:
    """A test split normalised once, on the evaluation device, for any number of networks to be scored on."""

    info: DatasetInfo
    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def of(cls, test: ImageSet, device: torch.device | str = "cpu") -> "PreparedTest":
        return cls(test.info, test.normalized(device=device), test.labels.to(device))

    def __len__(self) -> int:
        return len(self.y)


def network_seeds(seed: int, repeats: int) -> list[int]:
    """The seeds of the `repeats` networks an evaluation at `seed` trains (one per network)."""
    return [seed * 1000 + k for k in range(repeats)]


def evaluate_synset(images: torch.Tensor, labels: torch.Tensor, test: ImageSet | PreparedTest, model: str,
                    protocol: EvalProtocol, repeats: int = 5, seed: int = 0,
                    device: torch.device | str = "cpu",
                    progress: Callable[[int, int], None] | None = None,
                    teacher: torch.nn.Module | None = None) -> EvalResult:
    """Train `repeats` fresh `model`s on (images, labels) in normalised space; test each on `test`
    (an ImageSet, or PreparedTest prepared once when several evaluations share a test split). A
    soft-label protocol trains on `teacher`'s predictions instead of `labels`."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    check_teacher(protocol, teacher)
    device = torch.device(device)
    start = time.perf_counter()
    if not isinstance(test, PreparedTest):
        test = PreparedTest.of(test, device)
    images, labels = images.detach().to(device), labels.to(device)
    seeds = network_seeds(seed, repeats)
    accuracies, test_s = [], 0.0
    for k, s in enumerate(seeds):
        report = (lambda e: progress(k * protocol.epochs + e, repeats * protocol.epochs)) if progress else None
        score = evaluate_network(images, labels, test, model, protocol, s, device, report, teacher)
        accuracies.append(score.accuracy)
        test_s += score.test_s
    return EvalResult(model, protocol.to_json(), accuracies, seeds, len(images), len(test),
                      time.perf_counter() - start, test_s)


@dataclass(frozen=True)
class NetworkScore:
    """One trained and tested network: what a process that trained it hands to the one that writes."""

    accuracy: float
    wall_s: float      # training and test pass
    test_s: float      # of which the test pass


def evaluate_network(images: torch.Tensor, labels: torch.Tensor, test: PreparedTest, model: str,
                     protocol: EvalProtocol, seed: int, device: torch.device,
                     on_epoch: Callable[[int], None] | None = None,
                     teacher: torch.nn.Module | None = None) -> NetworkScore:
    """Train one fresh `model` of `seed` on (images, labels), already on `device`, and test it on `test`.
    Its accuracy depends on its seed alone (not on the networks trained before it), which is what lets
    several processes share a model's repeats."""
    start = time.perf_counter()
    net = train_network(images, labels, test.info, model, protocol, seed, device, on_epoch, teacher=teacher)
    t0 = time.perf_counter()
    acc = accuracy(net, test.x.to(device), test.y.to(device), protocol.batch_test, protocol.test_precision)
    end = time.perf_counter()
    return NetworkScore(acc, end - start, end - t0)


def check_teacher(protocol: EvalProtocol, teacher) -> None:
    if protocol.soft_labels and teacher is None:
        raise ValueError(f"the {protocol.name} protocol trains on a teacher's soft labels and was given no teacher; "
                         "pass the run's classifier (evaluate loads the one its export names)")


def train_network(images, labels, info, model: str, protocol: EvalProtocol, seed: int, device,
                  on_epoch: Callable[[int], None] | None = None,
                  prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  teacher: torch.nn.Module | None = None) -> torch.nn.Module:
    """Train one fresh network under the protocol; returns the network to test (the EMA one if any).
    `prepare` maps each minibatch of `images` to the network's input (e.g. uint8 -> normalised, for a
    whole training split kept as uint8); by default the images are the input. `teacher`: the soft
    labels' source under a soft-label protocol."""
    check_teacher(protocol, teacher)
    loss_fn = _loss_fn(protocol, info, teacher.to(device).eval() if protocol.soft_labels else None)
    net = get_network(model, info.channels, info.num_classes, info.resolution, seed=seed).to(device)
    lr = protocol.lr if protocol.lr is not None else evaluation_lr(model)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)
    sched = _scheduler(opt, protocol)
    ema = AveragedModel(net, avg_fn=_ema_fn(protocol.ema_decay), use_buffers=True) if protocol.ema_decay else None
    gen = torch.Generator().manual_seed(seed)
    dsa = augment.DSAParams() if protocol.dsa else None
    net.train()
    for epoch in range(protocol.epochs):
        _train_epoch(net, opt, images, labels, protocol, dsa, gen, prepare, loss_fn)
        sched.step()
        if ema is not None:
            ema.update_parameters(net)
        if on_epoch:
            on_epoch(epoch + 1)
    return ema.module if ema is not None else net


def _loss_fn(protocol: EvalProtocol, info: DatasetInfo, teacher):
    """(student logits, the minibatch it saw, its labels) -> loss: cross-entropy on the labels, or the
    soft-label loss against the teacher's logits of the same minibatch."""
    if teacher is None:
        return lambda out, x, y: F.cross_entropy(out, y)
    return lambda out, x, y: relabel.soft_label_loss(out, relabel.teacher_logits(teacher, x, info),
                                                     protocol.temperature)


def _train_epoch(net, opt, images, labels, protocol: EvalProtocol, dsa, gen: torch.Generator, prepare,
                 loss_fn) -> None:
    order = torch.randperm(len(images), generator=gen).to(images.device)
    for idx in order.split(protocol.batch_train):
        x = images[idx] if prepare is None else prepare(images[idx])
        if dsa is not None:
            x = augment.augment(x, dsa, gen)
        if protocol.crop_flip:
            x = relabel.crop_flip(x, gen)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=protocol.train_precision == "bf16"):
            loss = loss_fn(net(x), x, labels[idx])
        loss.backward()
        opt.step()


def _scheduler(opt, protocol: EvalProtocol):
    half = protocol.epochs // 2
    if protocol.schedule == "step":
        return MultiStepLR(opt, milestones=[half], gamma=0.1)
    if half == 0:
        return CosineAnnealingLR(opt, T_max=protocol.epochs)
    warmup = LinearLR(opt, start_factor=1e-7, end_factor=1.0, total_iters=half)
    cosine = CosineAnnealingLR(opt, T_max=protocol.epochs - half)
    return SequentialLR(opt, [warmup, cosine], milestones=[half])


def _ema_fn(max_decay: float):
    # Decay 1 - 1/(n+1) (a running mean) until it reaches max_decay, as GLaD's EMA with power 1 does.
    def avg(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        decay = min(max_decay, 1.0 - 1.0 / (float(num_averaged) + 1.0))
        return averaged * decay + current * (1.0 - decay)
    return avg


@torch.inference_mode()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000,
             precision: str = "fp32") -> float:
    """Top-1 accuracy of `net` on (x, y), in batches, its forward in `precision` (fp32 or bf16 autocast)."""
    net.eval()
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        correct = sum(int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / len(x)


def summary(result: EvalResult) -> str:
    pct = [f"{100 * a:.1f}" for a in result.accuracies]
    return (f"{result.model}: {100 * result.mean:.2f} ± {100 * result.std:.2f}% "
            f"over {len(result.accuracies)} runs ({', '.join(pct)}), {result.wall_s:.0f} s")


__all__ = ["PROTOCOLS", "EvalProtocol", "EvalResult", "PreparedTest", "accuracy", "check_teacher", "evaluate_synset",
           "get_protocol", "network_seeds", "summary", "train_network"]
