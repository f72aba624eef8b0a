"""DD-Ranking's Label-Robust and Augmentation-Robust Scores, and the real-data baselines they need.

Definitions (Li et al., "DD-Ranking", arXiv 2505.13300; NUS-HPC-AI-Lab/DD-Ranking b8b0966), on accuracies
as **fractions** in [0, 1] (DD-Ranking's own code passes percentages, which breaks its normalisation):

    HLR  = acc(whole real training split, hard labels) - acc(synthetic set, hard labels)
    IOR  = acc(synthetic set) - acc(random real subset with the same images per class)
    alpha = w * IOR - (1 - w) * HLR,                                   w = 0.5
    LRS  = (e^alpha - e^-1) / (e - e^-1)
    beta = g * (acc(syn, aug) - acc(rdm, aug)) + (1 - g) * (acc(syn, no aug) - acc(rdm, no aug)),  g = 0.5
    ARS  = (e^beta - e^-1) / (e - e^-1)

Each difference lies in [-1, 1], so alpha and beta do, and both scores lie in [0, 1] (0.27 at alpha = 0, 0.5
at alpha = ln cosh 1 = 0.43: the map is convex). Every method here trains with hard labels, so "the method's
own recipe" and "hard labels" are the same evaluation. As DD-Ranking does, a score is computed per evaluation
round (round k pairs the synthetic set's k-th network with the k-th random subset's, both under the same
protocol) and reported as mean and std over rounds; the whole-data accuracy enters every round as the mean
over its networks (it is trained once, not once per round, because it costs what thousands of synthetic-set
trainings do).

Baselines are a property of (dataset, model, protocol, epochs, IPC, repeats), not of a run: they are
computed once, from a fixed seed, and cached as JSON with their provenance (`BaselineCache`). Under a
soft-label protocol (`sre2l`) the random real subsets are trained on the teacher's soft labels too, as the
synthetic set is, and the teacher ({spec, sha256}) joins the key; the whole-data reference keeps its own
fixed hard-label recipe.

Under torchrun (`dist`) a baseline's networks (each of a fixed seed and subset) are dealt over the
processes and their accuracies gathered, in the single process's order; rank 0 alone reads and writes
the cache, and its view reaches the others.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .data import ImageSet
from .distributed import Distributed
from .evaluate import EvalProtocol, PreparedTest, accuracy, get_protocol, network_seeds, train_network
from .export import write_json
from .provenance import provenance
from .streams import Streams, stream_seed

W_LRS = 0.5     # DD-Ranking's w: weight of IOR against HLR
G_ARS = 0.5     # DD-Ranking's gamma: weight of the with-augmentation gain
BASELINE_SEED = 0
CACHE_FORMAT = "hpd-studio/baseline/1"
# DD-Ranking trains its whole-data reference with a fixed recipe of its own (e.g. SGD lr 0.01, step schedule),
# whatever the synthetic set's protocol; ours is the `dc` protocol (lr 0.01, x0.1 at half, no EMA, DSA).
WHOLE_DATA_PROTOCOL = "dc"

Progress = Callable[[int, int], None]


def robust_map(x: float) -> float:
    """(e^x - e^-1) / (e - e^-1): [-1, 1] onto [0, 1], DD-Ranking's normalisation of alpha and beta."""
    if not -1.0 - 1e-12 <= x <= 1.0 + 1e-12:
        raise ValueError(f"a DD-Ranking exponent lies in [-1, 1] when accuracies are fractions, got {x}")
    return (math.exp(x) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def _fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be an accuracy as a fraction in [0, 1] (not a percentage), got {value}")
    return value


def lrs(syn: float, whole: float, random: float, w: float = W_LRS) -> float:
    """Label-Robust Score of one round: syn, whole-data and random-subset accuracies as fractions."""
    syn, whole, random = _fraction("syn", syn), _fraction("whole", whole), _fraction("random", random)
    hlr, ior = whole - syn, syn - random
    return robust_map(w * ior - (1.0 - w) * hlr)


def ars(syn_aug: float, random_aug: float, syn_no_aug: float, random_no_aug: float, gamma: float = G_ARS) -> float:
    """Augmentation-Robust Score of one round (accuracies as fractions)."""
    values = [_fraction(n, v) for n, v in (("syn_aug", syn_aug), ("random_aug", random_aug),
                                            ("syn_no_aug", syn_no_aug), ("random_no_aug", random_no_aug))]
    sa, ra, sn, rn = values
    return robust_map(gamma * (sa - ra) + (1.0 - gamma) * (sn - rn))


def _stats(values: list[float]) -> dict:
    return {"values": values, "mean": statistics.fmean(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def _rounds(syn: list[float], *others: list[float]) -> int:
    n = len(syn)
    if n == 0 or any(len(o) != n for o in others):
        raise ValueError(f"every score round needs one accuracy of each kind; got {[n] + [len(o) for o in others]}")
    return n


def score_rounds(syn_aug: list[float], syn_no_aug: list[float] | None, random_aug: list[float],
                 random_no_aug: list[float] | None, whole: list[float]) -> dict:
    """LRS (and ARS when the no-augmentation accuracies are given), HLR and IOR, per round and summarised."""
    n = _rounds(syn_aug, random_aug)
    whole_mean = statistics.fmean(whole)
    out = {"rounds": n,
           "hlr": _stats([whole_mean - syn_aug[k] for k in range(n)]),
           "ior": _stats([syn_aug[k] - random_aug[k] for k in range(n)]),
           "lrs": _stats([lrs(syn_aug[k], whole_mean, random_aug[k]) for k in range(n)])}
    if syn_no_aug is not None and random_no_aug is not None:
        _rounds(syn_aug, syn_no_aug, random_no_aug)
        out["ars"] = _stats([ars(syn_aug[k], random_aug[k], syn_no_aug[k], random_no_aug[k]) for k in range(n)])
    return out


# ------------------------------------------------------------------------------------------ the baselines
def split_fingerprint(data) -> str:
    """A short hash of a split's images and labels: a cached baseline is only reused for the same data."""
    h = hashlib.sha1()
    images = getattr(data, "images", None)
    if images is not None:
        h.update(images.contiguous().numpy().tobytes())
    else:  # a split read from disk on demand (LazyImageSet): its file list stands for its images
        h.update("\n".join(data.files).encode())
    h.update(data.labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class BaselineCache:
    """One JSON file per baseline under `root`/<dataset>/<model>/, named by kind and a hash of its key."""

    root: Path

    def path(self, key: dict) -> Path:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
        name = f"{key['kind']}-ipc{key['ipc']}" if "ipc" in key else key["kind"]
        return Path(self.root) / key["dataset"] / key["model"] / f"{name}-{key['protocol']['name']}-e{key['protocol']['epochs']}-{digest}.json"

    def load(self, key: dict) -> dict | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a damaged cache entry is recomputed
        return data if data.get("key") == json.loads(json.dumps(key, default=str)) else None

    def store(self, key: dict, result: dict) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"key": key} | result)
        return path


def _key(kind: str, train: ImageSet, model: str, protocol: EvalProtocol, repeats: int, **extra) -> dict:
    return {"format": CACHE_FORMAT, "kind": kind, "dataset": train.info.name, "train": split_fingerprint(train),
            "model": model, "protocol": protocol.to_json(), "repeats": repeats, "seed": BASELINE_SEED} | extra


def random_subset(train: ImageSet, ipc: int, k: int) -> torch.Tensor:
    """Round k's random real subset: `ipc` training images per class, class-major, from a fixed stream."""
    gen = torch.Generator().manual_seed(stream_seed(BASELINE_SEED, f"random-real/{k}"))
    picks = []
    for c, idx in enumerate(train.class_indices()):
        if len(idx) < ipc:
            raise ValueError(f"class {train.info.class_names[c]} has {len(idx)} training images, fewer than IPC {ipc}")
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:ipc]])
    return torch.cat(picks)


def random_real_baseline(train: ImageSet, test: PreparedTest, model: str, protocol: EvalProtocol, ipc: int,
                         repeats: int, cache: BaselineCache, device: torch.device | str = "cpu",
                         progress: Progress | None = None, teacher: torch.nn.Module | None = None,
                         teacher_id: dict | None = None, dist: Distributed | None = None) -> tuple[dict, Path]:
    """Accuracies of `model` trained on `repeats` random real subsets of `ipc` images per class, with the
    protocol's augmentation and without it; cached. A soft-label protocol needs `teacher` and its record
    `teacher_id` (part of the key)."""
    if protocol.soft_labels and (teacher is None or teacher_id is None):
        raise ValueError(f"the random-real baseline under the {protocol.name} protocol needs the teacher and "
                         "its record")
    dist = dist or Distributed()
    extra = {"teacher": teacher_id} if protocol.soft_labels else {}
    key = _key("random-real", train, model, protocol, repeats, ipc=ipc, **extra)
    cached = dist.from_first(lambda: cache.load(key))
    if cached is not None:
        return cached, cache.path(key)
    device = torch.device(device)
    start = time.perf_counter()
    variants = {"aug": protocol, "no_aug": protocol.without_augmentation()}
    seeds = network_seeds(Streams(BASELINE_SEED).seed_for("baseline-nets"), repeats)
    subsets = [random_subset(train, ipc, k) for k in range(repeats)]
    # Round k's subset with augmentation, then without: one network each, in this order in one process.
    jobs = [(k, name) for k in range(repeats) for name in variants]
    total = len(jobs) * protocol.epochs
    report = progress if dist.writes else None

    def one(j: int) -> float:
        k, proto = jobs[j][0], variants[jobs[j][1]]
        idx = subsets[k]
        images, labels = train.normalized(idx, device=device), train.labels[idx].to(device)
        net = train_network(images, labels, train.info, model, proto, seeds[k], device,
                            (lambda e: report(min(total, dist.progress(j, proto.epochs, e)), total)) if report else None,
                            teacher=teacher)
        return accuracy(net, test.x, test.y, proto.batch_test, proto.test_precision)

    accs = dist.spread(range(len(jobs)), one)
    by_variant = {name: [a for (_, v), a in zip(jobs, accs) if v == name] for name in variants}
    result = {"aug": _stats(by_variant["aug"]), "no_aug": _stats(by_variant["no_aug"]), "seeds": seeds,
              "subsets": [idx.tolist() for idx in subsets], "wall_s": time.perf_counter() - start,
              "provenance": provenance(device)}
    return result, _store(cache, key, result, dist)


def _store(cache: BaselineCache, key: dict, result: dict, dist: Distributed) -> Path:
    """Rank 0 alone writes the cache; every rank gets the entry's path."""
    return cache.store(key, result) if dist.writes else cache.path(key)


def whole_data_baseline(train: ImageSet, test: PreparedTest, model: str, epochs: int, repeats: int,
                        cache: BaselineCache, device: torch.device | str = "cpu",
                        progress: Progress | None = None, dist: Distributed | None = None) -> tuple[dict, Path]:
    """Accuracy of `model` trained on the whole training split (WHOLE_DATA_PROTOCOL for `epochs`); cached.
    The split stays uint8 on the device and each minibatch is normalised as it is drawn."""
    dist = dist or Distributed()
    protocol = get_protocol(WHOLE_DATA_PROTOCOL, epochs)
    if getattr(train, "images", None) is None:
        raise ValueError(f"the whole-data baseline keeps the {train.info.name} training split in memory, and "
                         f"{train.info.name} is read from disk on demand; --scores does not support it yet")
    key = _key("whole-data", train, model, protocol, repeats)
    cached = dist.from_first(lambda: cache.load(key))
    if cached is not None:
        return cached, cache.path(key)
    device = torch.device(device)
    start = time.perf_counter()
    images, labels = train.images.to(device), train.labels.to(device)
    prepare = lambda batch: train.info.normalize(batch.float() / 255)  # noqa: E731
    seeds = network_seeds(Streams(BASELINE_SEED).seed_for("whole-data-nets"), repeats)
    total = repeats * epochs
    report = progress if dist.writes else None

    def one(k: int) -> float:
        net = train_network(images, labels, train.info, model, protocol, seeds[k], device,
                            (lambda e: report(min(total, dist.progress(k, epochs, e)), total)) if report else None,
                            prepare)
        return accuracy(net, test.x, test.y, protocol.batch_test)

    accs = dist.spread(range(repeats), one)
    result = {"aug": _stats(accs), "seeds": seeds, "train_images": len(train),
              "wall_s": time.perf_counter() - start, "provenance": provenance(device)}
    return result, _store(cache, key, result, dist)


__all__ = ["BASELINE_SEED", "BaselineCache", "G_ARS", "WHOLE_DATA_PROTOCOL", "W_LRS", "ars", "lrs", "random_real_baseline",
           "random_subset", "robust_map", "score_rounds", "split_fingerprint", "whole_data_baseline"]
