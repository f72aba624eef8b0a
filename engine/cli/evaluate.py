"""`python -m engine evaluate`: train fresh networks of several models on a run's synthetic set, test them
on the real test split, and write eval.json (resumable per model; see engine/suite.py).

Under `torchrun --nproc-per-node N -m engine evaluate ...` the processes share every model's networks;
rank 0 alone shows the bar, prints and writes eval.json, the same file one process writes."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from tqdm import tqdm

from .. import distributed
from ..data import DatasetError, dataset_info, load_dataset
from ..evaluate import PROTOCOLS, get_protocol
from ..nets import list_networks
from ..suite import EVAL_FILE, SuiteSpec, read_run, resolve_models
from .common import UserError, add_common, apply_threads, fail, resolve_device

HELP = ("train fresh networks of every model on a run's synthetic set and test them on the real test split "
        "(writes eval.json)")


def add_suite_arguments(p: argparse.ArgumentParser) -> None:
    """The suite's flags, shared with `compare`."""
    p.add_argument("--models", default=None,
                   help=f"comma-separated models (default: every one that supports the dataset's resolution: "
                        f"{','.join(list_networks())})")
    p.add_argument("--model", default=None, help="one model only (a shortcut for --models MODEL)")
    p.add_argument("--repeats", type=int, default=5, help="networks per model (mean ± std over them)")
    p.add_argument("--protocol", default="glad", help=f"training recipe: {', '.join(PROTOCOLS)} (see README)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the protocol's, 1000)")
    p.add_argument("--test-precision", choices=("fp32", "bf16"), default=None,
                   help="arithmetic of the test passes (default fp32; bf16: autocast, 1.8-4x faster here, a "
                        "network's accuracy within 0.12 points: BENCHMARKS.md)")
    p.add_argument("--train-precision", choices=("fp32", "bf16"), default=None,
                   help="arithmetic of the training's forward and loss (default fp32; bf16: autocast, weights and "
                        "optimiser in fp32, 1.2-2.5x faster training here but +1.5 points over 15 paired networks, "
                        "mostly AlexNet, so results differ from fp32's: BENCHMARKS.md)")
    p.add_argument("--teacher", default=None,
                   help="classifier spec of the sre2l protocol's teacher (default: the one the run's folder records, "
                        "its --classifier)")
    p.add_argument("--scores", action="store_true",
                   help="add DD-Ranking's LRS and ARS (against random real subsets of the same IPC and the whole "
                        "training split, computed once and cached)")
    p.add_argument("--score-models", default=None,
                   help="comma-separated models that get scores (default: the backbone; 'all': every evaluated one)")
    p.add_argument("--whole-epochs", type=int, default=10,
                   help="epochs of the whole-data baseline (the `dc` recipe over the full training split)")
    p.add_argument("--whole-repeats", type=int, default=1, help="networks of the whole-data baseline")
    p.add_argument("--cache", type=Path, default=None,
                   help="folder of the cached baselines (default: baselines/ beside the run folder)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a run folder holding synthetic.pt and run.json")
    add_suite_arguments(p)
    p.add_argument("--data-root", default=None, help="dataset folder (default: the one the run used)")
    add_common(p, seed_help="seed of the evaluation networks (default: derived from the run's seed, so runs "
                            "at one seed are evaluated by the same networks)", seed_default=None)


def suite_spec(args: argparse.Namespace, resolution: int, backbone: str) -> SuiteSpec:
    """The SuiteSpec the suite flags describe, checked against the data's resolution."""
    check_names(args)
    names = [args.model] if args.model else split_list(args.models, "--models")
    models = resolve_models(names, resolution)
    if args.score_models == "all":
        scored = models
    elif args.score_models:
        scored = resolve_models(split_list(args.score_models, "--score-models"), resolution)
    else:
        scored = (backbone,) if backbone in models else models[:1]
    protocol = get_protocol(args.protocol, args.epochs, getattr(args, "test_precision", None),
                            getattr(args, "train_precision", None))
    return SuiteSpec(models, protocol, args.repeats, getattr(args, "seed", None),
                     scored if args.scores else (), args.whole_epochs, args.whole_repeats, args.teacher)


def check_names(args: argparse.Namespace) -> None:
    """Refuse unknown model names (and --model with --models) before anything is read."""
    if args.model and args.models:
        raise UserError("give --model (one model) or --models (a list), not both.")
    for flag, text in (("--models", args.models), ("--model", args.model), ("--score-models", args.score_models)):
        if text == "all" and flag == "--score-models":
            continue
        for name in split_list(text, flag) or []:
            if name not in list_networks():
                raise UserError(f"unknown model {name!r} in {flag}; choose among: {', '.join(list_networks())}")


def split_list(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise UserError(f"{flag} needs at least one comma-separated value, got {text!r}.")
    return items


def run(args: argparse.Namespace) -> int:
    from ..suite import evaluate_run  # torch-heavy; --help stays fast
    dist = distributed.Distributed()
    first = int(os.environ.get("RANK", "0")) == 0  # before the group exists: torchrun's rank, else 0
    try:
        apply_threads(args.threads)
        device = distributed.process_device(resolve_device(args.device))
        check_names(args)  # an unknown model name is wrong whatever the folder holds
        # Every process checks the folder and the flags before joining, so bad input is refused by all
        # alike and none waits for the others (the processes of one machine see the same folder).
        _, summary = read_run(args.run_dir)
        config = summary["config"]
        info = dataset_info(config["dataset"])
        spec = suite_spec(args, info.resolution, config.get("net", "convnet"))
        test = load_dataset(config["dataset"], "test", args.data_root or config.get("data_root"))
        dist = distributed.from_env(device)
        bars = Bars()
        try:
            result = evaluate_run(args.run_dir, spec, device=device, data_root=args.data_root, cache=args.cache,
                                  progress=bars.update, test=test, dist=dist)
        finally:
            bars.close()
    except (ValueError, DatasetError, UserError) as exc:
        return fail(str(exc)) if first or dist.active else 2
    finally:
        dist.close()
    if dist.writes:
        for line in report_lines(result):
            print(line)
        print(f"wrote {args.run_dir / EVAL_FILE}")
    return 0


class Bars:
    """One tqdm bar per progress stage: "suite" (every network of the set), then each baseline computed."""

    def __init__(self):
        self.bars: dict[str, tqdm] = {}

    def update(self, stage: str, done: int, total: int) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            desc = "evaluate" if stage == "suite" else stage.replace(" suite", " evaluate")
            bar = self.bars[stage] = tqdm(total=total, desc=desc, unit="ep", leave=False)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def report_lines(result: dict) -> list[str]:
    lines = []
    for name, r in result["models"].items():
        pct = ", ".join(f"{100 * a:.1f}" for a in r["accuracies"])
        tag = " (backbone)" if name == result["backbone"] else ""
        lines.append(f"{name}{tag}: {100 * r['mean']:.2f} ± {100 * r['std']:.2f}% over {len(r['accuracies'])} "
                     f"networks ({pct}), {r['wall_s']:.0f} s")
    if result["cross_arch_mean"] is not None:
        lines.append(f"cross-architecture mean ({', '.join(result['cross_arch_models'])}): "
                     f"{100 * result['cross_arch_mean']:.2f}%")
    for name, s in result.get("scores", {}).items():
        text = f"{name}: LRS {s['lrs']['mean']:.4f} ± {s['lrs']['std']:.4f}"
        if "ars" in s:
            text += f", ARS {s['ars']['mean']:.4f} ± {s['ars']['std']:.4f}"
        lines.append(text + f" (HLR {100 * s['hlr']['mean']:.1f}, IOR {100 * s['ior']['mean']:.1f} points)")
    return lines
