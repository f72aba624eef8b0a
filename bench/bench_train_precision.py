"""The evaluation's training in bf16 against float32, paired network by network (issue 18).

For every run folder, model and network seed, two networks start from the same weights and see the same
minibatches and augmentations: one trains in float32, one under bf16 autocast (`--train-precision bf16`:
forward and loss in bf16, weights, gradients and SGD in float32). Both are tested on the whole test split
the same way (`--test-precision`). Prints per model the mean accuracy of both, the paired difference
(bf16 - fp32, points) with a 95% t interval over the pairs, and the training time of both, alternating
which goes first; the thread count and load beside them.

    OMP_NUM_THREADS=1 python bench/bench_train_precision.py RUN_DIR [RUN_DIR ...] --networks 1 --epochs 300 \
        --threads 1 --json bench/results/train_precision_s14.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.compare import t975  # noqa: E402
from engine.data import load_dataset  # noqa: E402
from engine.evaluate import PreparedTest, accuracy, get_protocol, train_network  # noqa: E402
from engine.nets import networks_for  # noqa: E402
from engine.suite import read_run  # noqa: E402


def one_pair(synthetic: dict, test: PreparedTest, model: str, args: argparse.Namespace, seed: int,
             first: str) -> dict:
    """The same network trained both ways, `first` first; accuracies and training seconds of both."""
    row = {}
    for precision in (first, "fp32" if first == "bf16" else "bf16"):
        protocol = get_protocol(args.protocol, args.epochs, train_precision=precision)
        t0 = time.process_time()
        net = train_network(synthetic["images"].float(), synthetic["labels"].long(), test.info, model,
                            protocol, seed, "cpu")
        row[f"{precision}_train_s"] = time.process_time() - t0
        row[f"{precision}_acc"] = accuracy(net, test.x, test.y, 1000, args.test_precision)
    return row


def interval(diffs: list[float]) -> str:
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return f"{mean:+.2f}"
    half = t975(len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"


def report(rows: dict[str, list[dict]], args: argparse.Namespace) -> None:
    print(f"\nthreads {args.threads}, load {os.getloadavg()[0]:.2f}, {args.protocol} protocol, {args.epochs} "
          f"epochs, {args.networks} network(s) per model and run, test passes {args.test_precision}, "
          f"runs {[str(r) for r in args.runs]}")
    print("| model | pairs | fp32 acc, % | bf16 acc, % | bf16 - fp32, points (95% t interval) | "
          "training CPU-s fp32 | bf16 | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    every = []
    for model, rs in rows.items():
        diffs = [100 * (r["bf16_acc"] - r["fp32_acc"]) for r in rs]
        every += diffs
        t32 = statistics.median(r["fp32_train_s"] for r in rs)
        t16 = statistics.median(r["bf16_train_s"] for r in rs)
        print(f"| {model} | {len(rs)} | {100 * statistics.fmean(r['fp32_acc'] for r in rs):.2f} | "
              f"{100 * statistics.fmean(r['bf16_acc'] for r in rs):.2f} | {interval(diffs)} | {t32:.1f} | "
              f"{t16:.1f} | {t32 / t16:.2f}x |")
    if every:
        print(f"| all | {len(every)} | | | {interval(every)} | | | |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="run folders holding synthetic.pt")
    p.add_argument("--models", default=None, help="comma-separated (default: all that take the resolution)")
    p.add_argument("--networks", type=int, default=1, help="network seeds per model and run")
    p.add_argument("--protocol", default="dc", help="the evaluation recipe (RESULTS.md's suites: dc)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--test-precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write the rows here as they come (a rerun resumes)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows: dict[str, list[dict]] = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    test = None
    for r, run in enumerate(args.runs):
        synthetic, summary = read_run(run)
        if test is None:
            test = PreparedTest.of(load_dataset(summary["config"]["dataset"], "test"))
        for model in args.models.split(",") if args.models else networks_for(test.info.resolution):
            for k in range(args.networks):
                seed = 1000 + k
                if any(x["run"] == str(run) and x["seed"] == seed for x in rows.get(model, [])):
                    continue
                first = "fp32" if (r + k) % 2 == 0 else "bf16"
                row = {"run": str(run), "seed": seed, **one_pair(synthetic, test, model, args, seed, first)}
                rows.setdefault(model, []).append(row)
                print(json.dumps({"model": model, **row}), flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1))
    report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
