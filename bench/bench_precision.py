"""The evaluation's test passes in bf16 against float32, paired on the very same trained networks (issue 18).

For every model, `--networks` networks are trained (float32, the glad protocol at `--epochs`) on a run's
synthetic set; each is then tested on the whole test split twice, float32 and bf16 autocast, alternating
which goes first. Prints per model the accuracy of both, the per-network difference (bf16 - fp32, in
points; its mean and largest magnitude) and the test pass's time in both, with the thread count and load.

    OMP_NUM_THREADS=1 python bench/bench_precision.py RUN_DIR [RUN_DIR ...] --networks 2 --epochs 300 --threads 1
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

from engine.data import load_dataset  # noqa: E402
from engine.evaluate import PreparedTest, accuracy, get_protocol, train_network  # noqa: E402
from engine.nets import networks_for  # noqa: E402
from engine.suite import read_run  # noqa: E402


def timed(net, test: PreparedTest, precision: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    acc = accuracy(net, test.x, test.y, 1000, precision)
    return acc, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="run folders holding synthetic.pt")
    p.add_argument("--models", default=None, help="comma-separated (default: all that take the resolution)")
    p.add_argument("--networks", type=int, default=2, help="networks per model and run")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    protocol = get_protocol("glad", args.epochs)
    rows: dict[str, list[dict]] = {}
    test = None
    for run in args.runs:
        synthetic, summary = read_run(run)
        if test is None:
            test = PreparedTest.of(load_dataset(summary["config"]["dataset"], "test"))
        models = args.models.split(",") if args.models else networks_for(test.info.resolution)
        for model in models:
            for k in range(args.networks):
                net = train_network(synthetic["images"].float(), synthetic["labels"].long(), test.info, model,
                                    protocol, 1000 + k, "cpu")
                order = ("fp32", "bf16") if k % 2 == 0 else ("bf16", "fp32")
                got = {prec: timed(net, test, prec) for prec in order}
                rows.setdefault(model, []).append({"run": str(run), "seed": 1000 + k,
                                                   **{f"{prec}_acc": got[prec][0] for prec in got},
                                                   **{f"{prec}_s": got[prec][1] for prec in got}})
                print(json.dumps({"model": model, **rows[model][-1]}), flush=True)
    print(f"\nthreads {args.threads}, load {os.getloadavg()[0]:.2f}, {args.epochs} epochs, "
          f"{args.networks} networks per model and run, runs {[str(r) for r in args.runs]}")
    print("| model | fp32 acc, % | bf16 acc, % | bf16 - fp32 per network, points (mean; max abs) | test pass fp32 s | bf16 s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for model, rs in rows.items():
        diffs = [100 * (r["bf16_acc"] - r["fp32_acc"]) for r in rs]
        t32, t16 = statistics.median(r["fp32_s"] for r in rs), statistics.median(r["bf16_s"] for r in rs)
        print(f"| {model} | {100 * statistics.fmean(r['fp32_acc'] for r in rs):.2f} | "
              f"{100 * statistics.fmean(r['bf16_acc'] for r in rs):.2f} | {statistics.fmean(diffs):+.3f}; "
              f"{max(abs(d) for d in diffs):.2f} | {t32:.1f} | {t16:.1f} | {t32 / t16:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
