"""The evaluation suite: a run's synthetic set trained on by several networks, written as one eval.json.

`evaluate_run` trains `repeats` fresh networks of every model on the run's `synthetic.pt` and tests them on
the real test split, read and normalised once. After every model it writes `eval.partial.json`, so a killed
evaluation continues with the models it had not finished; a finished `eval.json` of the same set, protocol,
repeats and seed also counts as done, so repeating a command, or adding a model, trains only what is new.
`cross_arch_mean` is the paper's Table 5 number: the mean over the evaluated models other than the backbone
(the run's matching network, run.json's config "net"). With `score_models` it adds DD-Ranking's LRS and ARS
(engine/scores.py) against cached random-real and whole-data baselines. Under a soft-label protocol
(`sre2l`) every network, the random-real baselines' too, trains on the teacher the run's folder records
(engine/teacher.py; `SuiteSpec.teacher` names another), and the teacher is part of every key.

Under torchrun (`dist`) the processes share each model's networks: every network's seed is fixed by the
evaluation seed and its repeat index, so they are dealt round-robin, each process trains and tests its
own, and the accuracies gathered after every model are the single process's, in repeat order. Rank 0
alone reads the folder (its view reaches the others), writes the partial file after every model and
eval.json at the end, and alone reports progress; the baselines spread their networks the same way.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .data import ImageSet, load_dataset
from .distributed import Distributed
from .evaluate import EvalProtocol, EvalResult, PreparedTest, evaluate_network, evaluate_synset, network_seeds
from .export import write_json
from .nets import list_networks, networks_for, unsupported_reason
from .provenance import provenance
from .scores import BaselineCache, random_real_baseline, score_rounds, whole_data_baseline
from .streams import Streams
from .teacher import load_teacher

EVAL_FORMAT = "hpd-studio/eval/2"
EVAL_FILE = "eval.json"
PARTIAL_FILE = "eval.partial.json"
EVAL_STREAM = "test-eval"  # the stream of a run's seed that seeds its test evaluation networks

# (stage, done, total): stage "suite" counts the epochs of every network of the synthetic set (one bar);
# "baseline <model> <kind>" the epochs of a baseline being computed (cached ones report nothing).
Progress = Callable[[str, int, int], None]


class RunFolderError(ValueError):
    """The folder is not an evaluable run; the message is one sentence saying why and what to do."""


@dataclass(frozen=True)
class SuiteSpec:
    models: tuple[str, ...]
    protocol: EvalProtocol
    repeats: int = 5
    seed: int | None = None                 # None: from the run's seed (stream EVAL_STREAM), so paired
    score_models: tuple[str, ...] = ()      # models that get LRS/ARS (each also trained without augmentation)
    whole_epochs: int = 10                  # whole-data baseline: epochs over the training split
    whole_repeats: int = 1
    teacher: str | None = None              # a soft-label protocol's teacher; None: the one the run records

    def __post_init__(self):
        if self.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {self.repeats}")
        if not self.models:
            raise ValueError("the suite needs at least one model")
        if self.whole_epochs < 1 or self.whole_repeats < 1:
            raise ValueError("the whole-data baseline needs at least 1 epoch and 1 network")
        missing = [m for m in self.score_models if m not in self.models]
        if missing:
            raise ValueError(f"--score-models {', '.join(missing)} are not among the evaluated models "
                             f"({', '.join(self.models)})")


def resolve_models(names: list[str] | None, resolution: int) -> tuple[str, ...]:
    """The models to evaluate: `names` checked (unknown or unable to take `resolution` px: ValueError),
    or every registered network that supports the resolution."""
    if not names:
        chosen = networks_for(resolution)
        if not chosen:
            raise ValueError(f"no registered network supports {resolution} px images")
        return tuple(chosen)
    out: list[str] = []
    for name in names:
        if name not in list_networks():
            raise ValueError(f"unknown model {name!r}; choose among: {', '.join(list_networks())}")
        why = unsupported_reason(name, resolution)
        if why:
            raise ValueError(f"model {name} cannot evaluate {resolution} px images ({why}); choose among: "
                             f"{', '.join(networks_for(resolution)) or 'none'}")
        if name not in out:
            out.append(name)
    return tuple(out)


def read_run(run_dir: Path) -> tuple[dict, dict]:
    """(synthetic.pt's tensors, run.json) of a run folder; RunFolderError when either is missing or bad."""
    run_dir = Path(run_dir)
    pt, meta = run_dir / "synthetic.pt", run_dir / "run.json"
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} does not exist; give a run folder made by `python -m engine distill`.")
    if not pt.is_file() or not meta.is_file():
        raise RunFolderError(f"{run_dir} is not a run folder (it needs synthetic.pt and run.json); create one "
                             "with `python -m engine distill --out ...`, or finish a killed one with --resume.")
    try:
        synthetic = torch.load(pt, map_location="cpu", weights_only=True)
        summary = json.loads(meta.read_text())
        summary["config"]["dataset"]
    except (RuntimeError, OSError, EOFError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{run_dir} holds an unreadable synthetic.pt or run.json ({exc}).") from exc
    if not isinstance(synthetic, dict) or not {"images", "labels"} <= set(synthetic):
        raise RunFolderError(f"{pt} lacks the `images` and `labels` tensors.")
    return synthetic, summary


def eval_seed(spec: SuiteSpec, run_seed: int) -> tuple[int, str]:
    if spec.seed is not None:
        return spec.seed, "--seed"
    return Streams(run_seed).seed_for(EVAL_STREAM), f"the run's seed {run_seed}, stream {EVAL_STREAM!r}"


def cross_arch(models: dict[str, dict], backbone: str) -> tuple[float | None, list[str]]:
    """Mean over the evaluated models other than the backbone (paper Table 5); None if there is none."""
    others = [m for m in models if m != backbone]
    return (statistics.fmean(models[m]["mean"] for m in others) if others else None), others


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _done_models(run_dir: Path, key: dict) -> tuple[dict, dict]:
    """Finished (models, no-augmentation models) from the partial file and from eval.json, when their key matches."""
    models, no_aug = {}, {}
    for name in (EVAL_FILE, PARTIAL_FILE):  # the partial file is newer when both exist
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("key") == key:
            models.update(data.get("models", {}))
            no_aug.update(data.get("no_aug", {}))
    return models, no_aug


def evaluate_run(run_dir: str | Path, spec: SuiteSpec, *, device: torch.device | str = "cpu",
                 data_root: str | None = None, cache: str | Path | None = None,
                 progress: Progress | None = None, test: ImageSet | None = None,
                 dist: Distributed | None = None) -> dict:
    """Evaluate the run in `run_dir` with `spec`; writes and returns eval.json's content.
    `cache`: the baselines' folder (default RUN_DIR/../baselines); `test`: the test split if already loaded;
    `dist`: the processes that share the networks (default: this one alone; every rank returns the result)."""
    dist = dist or Distributed()
    progress = progress if dist.writes else None  # one bar, rank 0's
    run_dir = Path(run_dir)
    start = time.perf_counter()
    synthetic, summary, digest = dist.from_first(lambda: read_run(run_dir) + (_file_sha256(run_dir / "synthetic.pt"),))
    config = summary["config"]
    device = torch.device(device)
    if test is None:
        test = load_dataset(config["dataset"], "test", data_root or config.get("data_root"))
    resolve_models(list(spec.models), test.info.resolution)  # the spec's models must fit the data
    seed, seed_source = eval_seed(spec, int(config.get("seed", 0)))
    teacher, teacher_id = None, None
    if spec.protocol.soft_labels:  # before any training: a missing teacher is one sentence, not a late crash
        teacher, teacher_id = load_teacher(summary.get("teacher"), config["dataset"], device, spec.teacher)
    key = {"format": EVAL_FORMAT, "synthetic_sha256": digest,
           "protocol": spec.protocol.to_json(), "repeats": spec.repeats, "seed": seed}
    if teacher_id is not None:
        key["teacher"] = teacher_id
    done, done_no_aug = dist.from_first(lambda: _done_models(run_dir, key))
    done = {m: done[m] for m in spec.models if m in done}
    done_no_aug = {m: done_no_aug[m] for m in spec.score_models if m in done_no_aug}
    images, labels = synthetic["images"].float(), synthetic["labels"].long()
    per_model = spec.repeats * spec.protocol.epochs
    todo = [(m, spec.protocol, done) for m in spec.models] + \
           [(m, spec.protocol.without_augmentation(), done_no_aug) for m in spec.score_models]
    total = per_model * len(todo)
    finished = per_model * sum(m in store for m, _, store in todo)
    if progress:
        progress("suite", finished, total)
    prepared = None
    for model, protocol, store in todo:
        if model in store:
            continue
        if prepared is None:
            prepared = PreparedTest.of(test, device)
        base = finished
        report = (lambda d, t, b=base: progress("suite", b + d, total)) if progress else None
        result = _evaluate_model(images, labels, prepared, model, protocol, spec.repeats, seed, device, report,
                                 teacher, dist)
        store[model] = result.to_json()
        finished += per_model
        if dist.writes:
            write_json(run_dir / PARTIAL_FILE, {"key": key, "models": done, "no_aug": done_no_aug})

    backbone = config.get("net", "convnet")
    models = {m: done[m] for m in spec.models}
    mean, others = cross_arch(models, backbone)
    out = {
        "format": EVAL_FORMAT,
        "dataset": config["dataset"], "split": "test", "test_images": len(test),
        "run": {"method": config.get("method"), "objective": config.get("objective"), "ipc": config.get("ipc"),
                "seed": config.get("seed"), "selection": summary.get("selection_basis"),
                "glad_cut": config.get("glad_cut"), "selected_space": summary.get("selected_space")},
        "backbone": backbone,
        "models": models,
        "cross_arch_mean": mean, "cross_arch_models": others,
        "protocol": spec.protocol.to_json(), "repeats": spec.repeats, "seed": seed, "seed_source": seed_source,
        "key": key,
    }
    if teacher_id is not None:
        out["teacher"] = teacher_id
    if spec.score_models:
        out["no_aug"] = {m: done_no_aug[m] for m in spec.score_models}
        out["scores"] = _scores(spec, models, done_no_aug, int(config["ipc"]), test, device,
                                Path(cache) if cache else run_dir.parent / "baselines",
                                data_root or config.get("data_root"), config["dataset"], progress,
                                (teacher, teacher_id), dist)
    if len(models) == 1:  # the one-model layout of earlier versions, kept for scripts that read it
        only = next(iter(models.values()))
        out |= {k: only[k] for k in ("model", "accuracies", "mean", "std", "seeds", "train_images", "wall_s")}
    out["suite_wall_s"] = sum(models[m]["wall_s"] for m in models) + sum(
        done_no_aug[m]["wall_s"] for m in spec.score_models)
    out["call_wall_s"] = time.perf_counter() - start
    out["provenance"] = provenance(device)
    if dist.writes:
        write_json(run_dir / EVAL_FILE, out)
        (run_dir / PARTIAL_FILE).unlink(missing_ok=True)
    return out


def _evaluate_model(images: torch.Tensor, labels: torch.Tensor, test: PreparedTest, model: str,
                    protocol: EvalProtocol, repeats: int, seed: int, device: torch.device,
                    report: Callable[[int, int], None] | None, teacher, dist: Distributed) -> EvalResult:
    """`evaluate_synset`, its networks dealt over the processes: each network's accuracy depends on its seed
    alone, so the gathered list is the single process's. Its wall_s is then the networks' own seconds
    summed over the processes (what one process would spend, less its set-up), not the elapsed time."""
    if not dist.active:  # one process: as ever
        return evaluate_synset(images, labels, test, model, protocol, repeats, seed, device, report, teacher)
    images, labels = images.detach().to(device), labels.to(device)
    seeds = network_seeds(seed, repeats)
    total = repeats * protocol.epochs

    def one(k: int):
        on_epoch = (lambda e: report(min(total, dist.progress(k, protocol.epochs, e)), total)) if report else None
        return evaluate_network(images, labels, test, model, protocol, seeds[k], device, on_epoch, teacher)

    scores = dist.spread(range(repeats), one)
    if report:
        report(total, total)
    return EvalResult(model, protocol.to_json(), [s.accuracy for s in scores], seeds, len(images), len(test),
                      sum(s.wall_s for s in scores), sum(s.test_s for s in scores))


def _scores(spec: SuiteSpec, models: dict, no_aug: dict, ipc: int, test: ImageSet, device, cache_root: Path,
            data_root: str | None, dataset: str, progress: Progress | None, teacher: tuple = (None, None),
            dist: Distributed | None = None) -> dict:
    cache = BaselineCache(cache_root)
    train = load_dataset(dataset, "train", data_root)
    prepared = PreparedTest.of(test, device)
    out = {}
    for model in spec.score_models:
        report = (lambda kind: (lambda d, t: progress(f"baseline {model} {kind}", d, t))) if progress else (lambda kind: None)
        rnd, rnd_path = random_real_baseline(train, prepared, model, spec.protocol, ipc, spec.repeats, cache, device,
                                             report("random-real"), *teacher, dist=dist)
        whole, whole_path = whole_data_baseline(train, prepared, model, spec.whole_epochs, spec.whole_repeats, cache,
                                                device, report("whole-data"), dist=dist)
        scored = score_rounds(models[model]["accuracies"], no_aug[model]["accuracies"], rnd["aug"]["values"],
                              rnd["no_aug"]["values"], whole["aug"]["values"])
        out[model] = scored | {
            "inputs": {"syn": models[model]["mean"], "syn_no_aug": no_aug[model]["mean"],
                       "random": rnd["aug"]["mean"], "random_no_aug": rnd["no_aug"]["mean"],
                       "whole": whole["aug"]["mean"]},
            "baselines": {"random_real": str(rnd_path), "whole_data": str(whole_path),
                          "whole_data_epochs": spec.whole_epochs, "whole_data_repeats": spec.whole_repeats}}
    return out


__all__ = ["EVAL_FILE", "EVAL_FORMAT", "EVAL_STREAM", "PARTIAL_FILE", "RunFolderError", "SuiteSpec", "cross_arch",
           "eval_seed", "evaluate_run", "read_run", "resolve_models"]
