"""Training the embedded proxy (and SRe²L's Tiny-ImageNet teacher): seeded, resumable per epoch, exported
as a small weights-only asset.

Recipe: SGD (Nesterov momentum, weight decay) under a one-cycle schedule, with random shifts of up
to `crop_padding` pixels and horizontal flips. Randomness comes from one seed: it fixes the weight
initialisation and one generator per epoch, so a run resumed from its epoch checkpoint ends with the
same weights as one that was never interrupted (same seed, same thread count).

Tiny-ImageNet streams from disk (engine/data/lazy.py), so batches are read with `take()`. Its defaults
(DATASET_DEFAULTS) take SRe²L's numbers where this trainer has the knob (zeyuanyin/tiny-imagenet
`script/train_rn18.sh`: 50 epochs, batch 256, lr 0.2, momentum 0.9, weight decay 1e-4, the 64-wide
ResNet-18 with a 3x3 stem and no max-pool); its recipe differs in the schedule (one-cycle here, 5
warm-up epochs then cosine there), the augmentation (shift + flip here, random resized crop + flip
there) and Nesterov momentum. The export loads as `trained:resnet18=FILE` (trained.py).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from engine.data import ImageSet, LazyImageSet, dataset_info, load_dataset

from . import fashion_mnist, trained
from .assets import file_sha256
from .augment import random_crop_flip
from .small_resnet import SmallResNetConfig, build_small_resnet18

CHECKPOINT_NAME = "checkpoint.pt"
DATASETS = ("fashion-mnist", "tiny-imagenet")
# Per-dataset defaults of the fields below; fashion-mnist's are the field defaults (the embedded asset's).
DATASET_DEFAULTS = {
    "fashion-mnist": {},
    "tiny-imagenet": {"epochs": 50, "batch_size": 256, "lr": 0.2, "momentum": 0.9, "weight_decay": 1e-4,
                      "crop_padding": 4, "width": 64},
}
EVAL_BATCH = 1000


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "fashion-mnist"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.1  # peak of the one-cycle schedule
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_padding: int = 2
    flip: bool = True
    width: int = 16
    seed: int = 0
    train_subset: int | None = None  # first N training images; for tests and quick experiments
    test_subset: int | None = None

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"cannot train a proxy classifier on {self.dataset!r}; valid datasets: {', '.join(DATASETS)}")
        for name in ("epochs", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1 or self.crop_padding < 0:
            raise ValueError("need lr > 0, weight_decay >= 0, 0 <= momentum < 1 and crop_padding >= 0")
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")

    @classmethod
    def for_dataset(cls, dataset: str = "fashion-mnist", **given) -> "TrainConfig":
        """The dataset's defaults (DATASET_DEFAULTS), then the `given` values that are not None."""
        if dataset not in DATASETS:
            raise ValueError(f"cannot train a proxy classifier on {dataset!r}; valid datasets: {', '.join(DATASETS)}")
        return cls(dataset=dataset, **(DATASET_DEFAULTS[dataset] | {k: v for k, v in given.items() if v is not None}))

    @property
    def arch(self) -> SmallResNetConfig:
        info = dataset_info(self.dataset)
        return SmallResNetConfig(in_channels=info.channels, num_classes=info.num_classes, width=self.width)


@dataclass
class TrainState:
    """Everything a resumed run needs; saved after every epoch."""

    epoch: int = 0  # completed epochs
    wall_time_s: float = 0.0  # training + evaluation time, summed over epochs (idle time between resumes excluded)
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float
    seconds: float


def _seeds(config: TrainConfig) -> list[int]:
    """One seed for the weight initialisation, then one per epoch, all derived from config.seed."""
    gen = torch.Generator().manual_seed(config.seed)
    return torch.randint(2**62, (config.epochs + 1,), generator=gen).tolist()


def build_network(config: TrainConfig) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        # Layer constructors draw from the global CPU generator; fork it so the caller's stream is untouched.
        torch.random.default_generator.manual_seed(_seeds(config)[0])
        net = build_small_resnet18(config.arch)
    return net.to(memory_format=torch.channels_last)  # ~20% faster convolutions on CPU, same results


def load_data(config: TrainConfig, root: str | Path | None = None) -> tuple[ImageSet | LazyImageSet,
                                                                            ImageSet | LazyImageSet]:
    train, test = load_dataset(config.dataset, "train", root), load_dataset(config.dataset, "test", root)
    if config.train_subset:
        train = train.subset(torch.arange(min(config.train_subset, len(train))))
    if config.test_subset:
        test = test.subset(torch.arange(min(config.test_subset, len(test))), split="test")
    return train, test


def _optimizer(net: nn.Module, config: TrainConfig, steps_per_epoch: int):
    opt = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, epochs=config.epochs,
                                                steps_per_epoch=steps_per_epoch)
    return opt, sched


@torch.no_grad()
def accuracy(net: nn.Module, data: ImageSet, device: torch.device, generator_range: bool = False) -> float:
    """Top-1 accuracy on `data`, in eval mode; inputs in the dataset's normalised space, or in the
    generators' [-1, 1] range when `generator_range` (what a ProxyClassifier takes)."""
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, len(data), EVAL_BATCH):
        index = slice(start, start + EVAL_BATCH)
        images = data.normalized(index, device)
        if generator_range:
            images = data.info.to_generator(images)
        logits = net(images.contiguous(memory_format=torch.channels_last))
        correct += (logits.argmax(1).cpu() == data.labels[index]).sum().item()
    net.train(was_training)
    return correct / len(data)


def train_epoch(net: nn.Module, data: ImageSet, config: TrainConfig, opt: torch.optim.Optimizer, sched: Any,
                generator: torch.Generator, device: torch.device, bar: tqdm) -> tuple[float, float]:
    net.train()
    order = torch.randperm(len(data), generator=generator)
    steps = len(data) // config.batch_size  # drop the ragged last batch: BatchNorm dislikes tiny batches
    loss_sum, correct = 0.0, 0
    for step in range(steps):
        index = order[step * config.batch_size:(step + 1) * config.batch_size]
        images = random_crop_flip(data.take(index), config.crop_padding, config.flip, generator)
        x = data.info.normalize(images.to(device).float() / 255).contiguous(memory_format=torch.channels_last)
        y = data.labels[index].to(device)
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.item()
        correct += (logits.argmax(1) == y).sum().item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / (step + 1):.3f}", refresh=False)
    return loss_sum / steps, correct / (steps * config.batch_size)


def save_checkpoint(path: Path, config: TrainConfig, state: TrainState, net: nn.Module,
                    opt: torch.optim.Optimizer, sched: Any) -> None:
    payload = {"config": asdict(config), "state": asdict(state), "model": net.state_dict(),
               "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a kill while saving leaves the previous checkpoint intact


def _read_checkpoint(path: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The run's checkpoint, if any, refused when it was written with other options."""
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["config"] != asdict(config):
        changed = sorted(k for k, v in asdict(config).items() if payload["config"].get(k) != v)
        raise ValueError(f"{path} was written with different options ({', '.join(changed)}); "
                         "repeat those options to resume, or pass a new --out to start afresh")
    return payload


def _restore(payload: dict[str, Any] | None, net: nn.Module, opt: torch.optim.Optimizer, sched: Any) -> TrainState:
    if payload is None:
        return TrainState()
    net.load_state_dict(payload["model"])
    opt.load_state_dict(payload["optimizer"])
    sched.load_state_dict(payload["scheduler"])
    return TrainState(**payload["state"])


@dataclass(frozen=True)
class TrainResult:
    net: nn.Module
    config: TrainConfig
    state: TrainState
    test: ImageSet


def train(config: TrainConfig, out_dir: str | Path, device: torch.device | str = "cpu", progress: bool = True,
          log: Callable[[str], None] = print, data: tuple[ImageSet, ImageSet] | None = None,
          data_root: str | Path | None = None) -> TrainResult:
    """Train (or resume) in `out_dir`, checkpointing after every epoch; returns the final network.

    `data` (train, test) replaces `load_data(config, data_root)` for callers that already hold the splits.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    checkpoint = out_dir / CHECKPOINT_NAME
    payload = _read_checkpoint(checkpoint, config)  # refuse a mismatched run before the slow data load
    train_set, test_set = data or load_data(config, data_root)
    steps = len(train_set) // config.batch_size
    if steps == 0:
        raise ValueError(f"{len(train_set)} training images give no full batch of {config.batch_size}")
    net = build_network(config).to(device)
    opt, sched = _optimizer(net, config, steps)
    state = _restore(payload, net, opt, sched)
    if state.epoch:
        log(f"resuming from {checkpoint} after epoch {state.epoch}/{config.epochs}")
    (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    seeds = _seeds(config)
    while state.epoch < config.epochs:
        epoch = state.epoch + 1
        start = time.perf_counter()
        with tqdm(total=steps, desc=f"epoch {epoch}/{config.epochs}", disable=not progress,
                  mininterval=5, dynamic_ncols=True) as bar:
            loss, train_acc = train_epoch(net, train_set, config, opt, sched,
                                          torch.Generator().manual_seed(seeds[epoch]), device, bar)
        test_acc = accuracy(net, test_set, device)
        stats = EpochStats(epoch, loss, train_acc, test_acc, time.perf_counter() - start)
        state.epoch, state.wall_time_s = epoch, state.wall_time_s + stats.seconds
        state.history.append(asdict(stats))
        save_checkpoint(checkpoint, config, state, net, opt, sched)
        (out_dir / "history.json").write_text(json.dumps(state.history, indent=1) + "\n")
        log(f"epoch {epoch}/{config.epochs}: loss {loss:.4f}, train acc {train_acc:.4f}, "
            f"test acc {test_acc:.4f} ({stats.seconds:.0f} s)")
    return TrainResult(net, config, state, test_set)


def export(result: TrainResult, path: str | Path, threads: int | None, command: str) -> dict[str, Any]:
    """Write the asset: float16 weights plus figures, the test accuracy measured on the stored weights
    through the proxy (beside the float32 figure, so the storage loss is on record)."""
    device = next(result.net.parameters()).device
    fp32_accuracy = accuracy(result.net, result.test, device)
    meta = {"dataset": result.config.dataset, "test_accuracy_fp32": fp32_accuracy,
            "test_images": len(result.test), "epochs": result.state.epoch, "seed": result.config.seed,
            "threads": threads, "wall_time_s": round(result.state.wall_time_s, 1), "command": command,
            "train_config": asdict(result.config), "storage_dtype": str(fashion_mnist.STORAGE_DTYPE)}
    asset = fashion_mnist.make_asset(result.net, result.config.arch, meta)
    proxy = (fashion_mnist.proxy_from_asset(asset) if result.config.dataset == "fashion-mnist"
             else trained.from_asset(asset, path)).to(device)
    # The recorded figure is the shipped (float16-stored) weights' own accuracy, measured through the proxy.
    asset["meta"]["test_accuracy"] = accuracy(proxy, result.test, device, generator_range=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(asset, tmp)
    os.replace(tmp, path)
    return {**asset["meta"], "sha256": file_sha256(path), "bytes": path.stat().st_size}

