"""Expert trajectories for MTT/TESLA: training, storage and loading.

An expert is the student's own network (ConvNet, instance norm, the same depth and width) trained from
scratch on the real training set: SGD without momentum or weight decay, unseeded-style DSA on every real
batch (per-sample parameters drawn from the expert's own generator). Its trajectory is `epochs + 1` flat
parameter vectors (the initialisation, then one after every epoch) in the network's fixed
`parameters()` order, stored as float32: the student restarts from these snapshots, and float32 is what
it computes in, so nothing is rounded twice.

Layout of a buffer folder: `manifest.json` (the recipe, the network's parameter shapes, the test accuracy
of every finished expert) and one `expert_0000.pt`, `expert_0001.pt`, ... per expert. Every file is
written to a temporary name and renamed, so a killed run leaves either the whole file or none: training
resumes at the first missing expert, and an expert that was interrupted restarts from its beginning.
Expert i draws everything from a seed derived from (seed, i) alone, so retraining it reproduces its
trajectory bit for bit (same device and thread count).

Under torchrun (`train_buffers(..., dist=)`) the missing experts are dealt round-robin over the processes;
each process writes its own experts' files (so the folder must be one they all see: one machine, or a
shared filesystem) and rank 0 alone reads the folder and writes the manifest, after each of its own
experts and, once the accuracies are gathered, with every one. A killed run resumes on any number of
processes: the expert files are what counts as finished.

Memory: a Fashion-MNIST ConvNet-3 has 317,706 parameters, so 51 snapshots take about 65 MB per expert.
`load_buffers` keeps the trajectories in memory by default (fine for a handful of experts); with
`in_memory=False` the files are memory-mapped and only the snapshots a run reads are paged in.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import augment
from .data import DatasetInfo, ImageSet, dataset_info, load_dataset
from .distributed import Distributed
from .nets import default_depth, get_network

FORMAT = 1
MANIFEST = "manifest.json"
MODEL = "convnet"
NORM = "instancenorm"
STORAGE_DTYPE = torch.float32
EVAL_BATCH = 1000


class BufferMismatchError(ValueError):
    """The expert buffers were trained for another network or dataset than the one asking for them."""


def expert_file(index: int) -> str:
    return f"expert_{index:04d}.pt"


def expert_seed(seed: int, index: int) -> int:
    """A seed for expert `index` that depends on (seed, index) only, so each expert can be retrained alone."""
    words = np.random.SeedSequence(entropy=seed, spawn_key=(index,)).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 31 ^ int(words[1])  # 63 bits: inside torch.Generator.manual_seed's range


# --- the student network and its flat parameter vector -------------------------------------------


def build_student(info: DatasetInfo, depth: int | None = None, width: int = 128, seed: int | None = None) -> nn.Module:
    """The ConvNet (instance norm) that both the experts and the TESLA student are."""
    return get_network(MODEL, info.channels, info.num_classes, info.resolution, seed=seed,
                       depth=depth, width=width, norm=NORM)


def flatten_params(net: nn.Module) -> torch.Tensor:
    """All parameters as one detached vector, in `parameters()` order (the trajectory format)."""
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def unflatten_params(flat: torch.Tensor, net: nn.Module) -> dict[str, torch.Tensor]:
    """Name -> view of `flat` shaped like that parameter, for `torch.func.functional_call`.

    The views keep the autograd link to `flat`, so a gradient with respect to the parameters lands on it.
    """
    named = list(net.named_parameters())
    sizes = [p.numel() for _, p in named]
    if flat.dim() != 1 or flat.numel() != sum(sizes):
        raise ValueError(f"flat vector of shape {tuple(flat.shape)} does not hold the net's {sum(sizes)} parameters")
    return {name: part.view(p.shape) for (name, p), part in zip(named, flat.split(sizes))}


def param_shapes(net: nn.Module) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(p.shape) for p in net.parameters())


# --- configuration and manifest --------------------------------------------------------------------


@dataclass(frozen=True)
class BufferConfig:
    """How to train the experts. `depth` None: the default depth for the dataset's resolution."""

    dataset: str = "fashion-mnist"
    experts: int = 10
    epochs: int = 50
    lr: float = 0.01
    batch: int = 256
    seed: int = 0
    depth: int | None = None
    width: int = 128
    data_root: str | None = None

    def __post_init__(self) -> None:
        dataset_info(self.dataset)  # raises for an unknown name, listing the valid ones
        for name in ("experts", "epochs", "batch", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.depth is not None and self.depth < 1:
            raise ValueError(f"depth must be at least 1, got {self.depth}")

    @property
    def info(self) -> DatasetInfo:
        return dataset_info(self.dataset)

    @property
    def resolved_depth(self) -> int:
        return self.depth if self.depth is not None else default_depth(self.info.resolution)


@dataclass(frozen=True)
class BufferManifest:
    """What `manifest.json` records. `test_accuracy[i]` is None until expert i is finished."""

    dataset: str
    depth: int
    width: int
    epochs: int
    lr: float
    batch: int
    seed: int
    param_shapes: tuple[tuple[int, ...], ...]
    experts: int
    test_accuracy: tuple[float | None, ...] = ()
    model: str = MODEL
    norm: str = NORM
    dsa_strategy: str = augment.DEFAULT_STRATEGY
    dtype: str = str(STORAGE_DTYPE).removeprefix("torch.")
    format: int = FORMAT

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(s)) for s in self.param_shapes)

    @property
    def finished(self) -> list[int]:
        return [i for i, acc in enumerate(self.test_accuracy) if acc is not None]

    def identity(self) -> dict:
        """The fields that fix every trajectory; two runs may share a folder only if these agree."""
        return {k: v for k, v in asdict(self).items() if k not in ("experts", "test_accuracy")}

    def with_accuracy(self, index: int, accuracy: float) -> "BufferManifest":
        acc = list(self.test_accuracy) + [None] * (self.experts - len(self.test_accuracy))
        acc[index] = accuracy
        return replace(self, test_accuracy=tuple(acc))

    def to_json(self) -> dict:
        return {**asdict(self), "num_params": self.num_params, "completed": len(self.finished),
                "files": [expert_file(i) for i in self.finished]}

    @classmethod
    def from_json(cls, data: dict) -> "BufferManifest":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["param_shapes"] = tuple(tuple(s) for s in values["param_shapes"])
        values["test_accuracy"] = tuple(values.get("test_accuracy", ()))
        return cls(**values)


def manifest_for(config: BufferConfig, net: nn.Module) -> BufferManifest:
    return BufferManifest(dataset=config.dataset, depth=config.resolved_depth, width=config.width,
                          epochs=config.epochs, lr=config.lr, batch=config.batch, seed=config.seed,
                          param_shapes=param_shapes(net), experts=config.experts,
                          test_accuracy=(None,) * config.experts)


def read_manifest(folder: Path) -> BufferManifest | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return BufferManifest.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a buffer manifest ({err}); remove it or choose another folder") from err


def write_manifest(folder: Path, manifest: BufferManifest) -> None:
    _atomic(folder / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest.to_json(), indent=2) + "\n"))


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    # Writing beside the target and renaming means a reader (or a resumed run) never sees half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


# --- training ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expert:
    index: int
    trajectory: torch.Tensor  # [epochs + 1, num_params], float32, CPU
    test_accuracy: float
    seconds: float


def train_expert(config: BufferConfig, index: int, train: ImageSet, test: ImageSet, device: torch.device | str = "cpu",
                 on_epoch: Callable[[int], None] | None = None) -> Expert:
    """Train expert `index` from scratch; `on_epoch(epoch)` is called after each epoch (progress, tests)."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(expert_seed(config.seed, index))
    init_seed = int(torch.randint(2**62, (1,), generator=gen))
    net = build_student(train.info, config.depth, config.width, seed=init_seed).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=0.0, weight_decay=0.0)
    images, labels = train.images.to(device), train.labels.to(device)
    snapshots = [flatten_params(net).cpu()]
    for epoch in range(config.epochs):
        _train_epoch(net, opt, images, labels, train.info, config.batch, gen)
        snapshots.append(flatten_params(net).cpu())
        if on_epoch:
            on_epoch(epoch + 1)
    trajectory = torch.stack(snapshots).to(STORAGE_DTYPE)
    return Expert(index, trajectory, accuracy_on(net, test, device), time.perf_counter() - start)


def _train_epoch(net: nn.Module, opt: torch.optim.Optimizer, images_u8: torch.Tensor, labels: torch.Tensor,
                 info: DatasetInfo, batch: int, gen: torch.Generator) -> None:
    net.train()
    dsa = augment.DSAParams()
    for index in torch.randperm(len(labels), generator=gen).split(batch):
        index = index.to(images_u8.device)
        x = augment.augment(info.normalize(images_u8[index].float() / 255), dsa, gen)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), labels[index]).backward()
        opt.step()


@torch.no_grad()
def accuracy_on(net: nn.Module, test: ImageSet, device: torch.device | str) -> float:
    """Top-1 accuracy without augmentation."""
    net.eval()
    correct = 0
    for start in range(0, len(test), EVAL_BATCH):
        index = slice(start, start + EVAL_BATCH)
        logits = net(test.normalized(index, device))
        correct += int((logits.argmax(1).cpu() == test.labels[index]).sum())
    net.train()
    return correct / len(test)


def save_expert(folder: Path, expert: Expert) -> None:
    payload = {"format": FORMAT, "index": expert.index, "trajectory": expert.trajectory,
               "test_accuracy": expert.test_accuracy, "seconds": expert.seconds}
    _atomic(folder / expert_file(expert.index), lambda tmp: torch.save(payload, tmp))


@dataclass(frozen=True)
class BufferSummary:
    folder: Path
    manifest: BufferManifest
    trained: list[int] = field(default_factory=list)  # experts trained by this call (the others were on disk)


def train_buffers(config: BufferConfig, out: str | Path, device: torch.device | str = "cpu", *,
                  data: tuple[ImageSet, ImageSet] | None = None, progress: bool = True,
                  log: Callable[[str], None] = tqdm.write,
                  on_epoch: Callable[[int, int], None] | None = None,
                  dist: Distributed | None = None) -> BufferSummary:
    """Train every expert of `config` missing from `out`, writing each file and the manifest as it finishes.

    `data` (train, test) replaces loading the dataset; `on_epoch(expert, epoch)` follows the progress;
    `dist`: the processes that share the experts (default: this one alone; rank 0 alone logs and shows
    the bar, every rank returns the whole summary).
    """
    dist = dist or Distributed()
    folder = Path(out)
    info = config.info
    fresh = manifest_for(config, build_student(info, config.depth, config.width))
    manifest = dist.from_first(lambda: _open_folder(folder, fresh))
    todo = [i for i in range(config.experts) if i not in manifest.finished]
    if len(todo) < config.experts and dist.writes:
        log(f"{config.experts - len(todo)} of {config.experts} experts already in {folder}; training {len(todo)}")
    if not todo:
        return BufferSummary(folder, manifest)
    train, test = data or (load_dataset(config.dataset, "train", config.data_root),
                           load_dataset(config.dataset, "test", config.data_root))
    if train.info != info:
        raise ValueError(f"the training data is {train.info.name}, but the buffers are for {config.dataset}")
    mine = [todo[j] for j in dist.mine(len(todo))]
    with tqdm(total=len(mine) * config.epochs, unit="epoch", disable=not progress or not dist.writes,
              dynamic_ncols=True) as bar:
        for n, index in enumerate(mine):
            bar.set_description(f"expert {n + 1}/{len(mine)} (#{index})")

            def epoch_done(epoch: int, index: int = index) -> None:
                bar.update(1)
                if on_epoch:
                    on_epoch(index, epoch)

            expert = train_expert(config, index, train, test, device, epoch_done)
            save_expert(folder, expert)
            manifest = manifest.with_accuracy(index, expert.test_accuracy)
            if dist.writes:  # the others' experts join it once gathered; until then their files count
                write_manifest(folder, manifest)
                log(_expert_line(expert.index, expert.test_accuracy, expert.seconds))
    if dist.active:
        manifest = _gather_experts(manifest, mine, dist, folder, log)
    return BufferSummary(folder, manifest, todo)


def _open_folder(folder: Path, fresh: BufferManifest) -> BufferManifest:
    """The folder made ready for training (stale files gone, the manifest of what is finished written)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _resume_manifest(folder, fresh)
    write_manifest(folder, manifest)
    return manifest


def _gather_experts(manifest: BufferManifest, mine: list[int], dist: Distributed, folder: Path,
                    log: Callable[[str], None]) -> BufferManifest:
    """Every process's finished experts in the manifest (their files are on disk): rank 0 writes it."""
    done = dist.gather_objects([(i, manifest.test_accuracy[i]) for i in mine])
    for rank, experts in enumerate(done):
        for index, accuracy in experts:
            manifest = manifest.with_accuracy(index, accuracy)
            if dist.writes and rank != dist.rank:
                log(_expert_line(index, accuracy) + f" (process {rank})")
    if dist.writes:
        write_manifest(folder, manifest)
    return manifest


def _expert_line(index: int, accuracy: float, seconds: float | None = None) -> str:
    return f"expert {index}: test accuracy {accuracy:.4f}" + (f" ({seconds:.1f} s)" if seconds is not None else "")


def _resume_manifest(folder: Path, fresh: BufferManifest) -> BufferManifest:
    """`fresh` with the accuracies of experts already on disk; refuses a folder trained another way."""
    for stale in folder.glob(".expert_*.pt.tmp"):
        stale.unlink()  # an expert killed while saving; it is retrained
    old = read_manifest(folder)
    if old is not None and old.identity() != fresh.identity():
        changed = sorted(k for k, v in fresh.identity().items() if old.identity().get(k) != v)
        details = ", ".join(f"{k}: {old.identity().get(k)} there, {fresh.identity()[k]} now" for k in changed)
        raise ValueError(f"{folder} holds experts trained with other options ({details}); repeat those "
                         "options to continue it, or choose another --out")
    # Asking for fewer experts than a folder holds keeps the extra ones listed rather than hiding them.
    count = max(fresh.experts, old.experts if old else 0)
    manifest = replace(fresh, experts=count, test_accuracy=(None,) * count)
    for index in range(count):
        accuracy = _finished_accuracy(folder, index, old)
        if accuracy is not None:
            manifest = manifest.with_accuracy(index, accuracy)
    return manifest


def _finished_accuracy(folder: Path, index: int, old: BufferManifest | None) -> float | None:
    path = folder / expert_file(index)
    if not path.is_file():
        return None
    if old is not None and index < len(old.test_accuracy) and old.test_accuracy[index] is not None:
        return old.test_accuracy[index]
    # Killed between saving the expert and updating the manifest: the file carries its own accuracy.
    return float(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["test_accuracy"])


# --- loading -------------------------------------------------------------------------------------------


class ExpertBuffers:
    """The finished experts' trajectories, each [epochs + 1, num_params], with their manifest."""

    def __init__(self, manifest: BufferManifest, trajectories: Sequence[torch.Tensor], names: Sequence[str]):
        expected = (manifest.epochs + 1, manifest.num_params)
        for name, traj in zip(names, trajectories):
            if tuple(traj.shape) != expected:
                raise ValueError(f"{name} holds a trajectory of shape {tuple(traj.shape)}, expected {expected}")
        if len(trajectories) != len(names) or not trajectories:
            raise ValueError("expert buffers need at least one trajectory, and one name per trajectory")
        self.manifest = manifest
        self.names = tuple(names)
        self._trajectories = list(trajectories)

    @classmethod
    def from_trajectories(cls, trajectories: Sequence[torch.Tensor], student: nn.Module, dataset: str,
                          lr: float = 0.01) -> "ExpertBuffers":
        """Buffers held only in memory (hand-made or computed elsewhere) for `student` on `dataset`."""
        manifest = BufferManifest(dataset=dataset, depth=getattr(student, "depth", 0),
                                  width=getattr(student, "width", 0), epochs=len(trajectories[0]) - 1, lr=lr,
                                  batch=0, seed=0, param_shapes=param_shapes(student), experts=len(trajectories),
                                  test_accuracy=(float("nan"),) * len(trajectories))
        return cls(manifest, trajectories, [f"<memory {i}>" for i in range(len(trajectories))])

    def __len__(self) -> int:
        return len(self._trajectories)

    @property
    def epochs(self) -> int:
        return self.manifest.epochs

    def trajectory(self, expert: int) -> torch.Tensor:
        return self._trajectories[expert]

    def snapshot(self, expert: int, epoch: int) -> torch.Tensor:
        """The flat parameters of `expert` after `epoch` epochs (0: its initialisation)."""
        if not 0 <= epoch <= self.epochs:
            raise IndexError(f"epoch {epoch} is outside the trajectory (0..{self.epochs})")
        return self._trajectories[expert][epoch]

    def check_student(self, student: nn.Module, dataset: str | None = None) -> None:
        """Raise BufferMismatchError unless `student` has exactly the experts' parameter shapes (and dataset)."""
        shapes = param_shapes(student)
        if dataset is not None and dataset != self.manifest.dataset:
            raise BufferMismatchError(f"the expert buffers were trained on {self.manifest.dataset}, "
                                      f"not on {dataset}; train buffers for {dataset} with `python -m engine buffers`")
        if shapes != self.manifest.param_shapes:
            raise BufferMismatchError(_mismatch_message(self.manifest, shapes))

    def fingerprint(self) -> dict:
        """What identifies these buffers in a checkpoint: the recipe and the expert files, as JSON values."""
        return json.loads(json.dumps({**self.manifest.identity(), "files": list(self.names)}))


def _mismatch_message(manifest: BufferManifest, shapes: tuple[tuple[int, ...], ...]) -> str:
    count = sum(int(np.prod(s)) for s in shapes)
    first = next((i for i, (a, b) in enumerate(zip(manifest.param_shapes, shapes)) if a != b),
                 min(len(shapes), len(manifest.param_shapes)))
    there = manifest.param_shapes[first] if first < len(manifest.param_shapes) else "none"
    here = shapes[first] if first < len(shapes) else "none"
    return (f"the expert buffers were trained for a {manifest.model} of depth {manifest.depth} and width "
            f"{manifest.width} ({manifest.num_params} parameters in {len(manifest.param_shapes)} tensors) but the "
            f"student has {count} parameters in {len(shapes)} tensors (tensor {first}: {there} there, {here} "
            "here); train buffers with the student's depth and width (`python -m engine buffers --depth D --width W`)")


def load_buffers(folder: str | Path, student: nn.Module | None = None, *, in_memory: bool = True) -> ExpertBuffers:
    """The finished experts in `folder`, checked against `student` when given.

    `in_memory=False` memory-maps the files: nothing is read until a snapshot is used.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise ValueError(f"{folder} has no {MANIFEST}; make expert buffers with `python -m engine buffers --out {folder}`")
    if student is not None and param_shapes(student) != manifest.param_shapes:
        raise BufferMismatchError(_mismatch_message(manifest, param_shapes(student)))
    if not manifest.finished:
        raise ValueError(f"{folder} has no finished expert yet; let `python -m engine buffers` run longer")
    names = [expert_file(i) for i in manifest.finished]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"{folder} lists {', '.join(missing)} but the file(s) are missing; rerun "
                         f"`python -m engine buffers` with the same options and --out {folder} to retrain them")
    trajectories = [torch.load(folder / n, map_location="cpu", weights_only=True, mmap=not in_memory)["trajectory"]
                    for n in names]
    return ExpertBuffers(manifest, trajectories, names)
