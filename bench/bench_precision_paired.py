"""The paired accuracy check of `distill --precision bf16` (issue 18): the same cells of two compare grids, one
distilled in float32 and one in bf16, every other setting equal, so a seed's two sets saw the same real
batches, networks and initial images and are tested by the same evaluation networks (their seeds follow the
run's seed). Prints, per cell kind and model, the per-seed accuracies (mean over the evaluation networks) of
both, the paired difference bf16 - fp32 with its 95% t-interval over seeds, and the distillations' step time.

    python bench/bench_precision_paired.py results/compare/dm1 results/compare/dm1-bf16 --arms pixel \\
        --models convnet,alexnet [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.compare import paired_difference  # noqa: E402

CELL = re.compile(r"^(?P<arm>.+)-seed(?P<seed>\d+)$")


def cells(grid: Path, arm: str) -> dict[int, Path]:
    """The evaluated, finished cells of `arm` in a grid, by seed."""
    out = {}
    for folder in sorted(grid.iterdir()):
        m = CELL.match(folder.name)
        if m and m["arm"] == arm and (folder / "eval.json").is_file():
            out[int(m["seed"])] = folder
    return out


def accuracy(folder: Path, model: str) -> float | None:
    models = json.loads((folder / "eval.json").read_text()).get("models", {})
    return models[model]["mean"] if model in models else None


def step_seconds(folder: Path) -> float:
    run = json.loads((folder / "run.json").read_text())
    return run["elapsed_s"] / max(1, run["steps_done"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("fp32", type=Path)
    p.add_argument("bf16", type=Path)
    p.add_argument("--arms", default="pixel", help="comma-separated cell kinds, e.g. pixel,hpd-last")
    p.add_argument("--models", default="convnet")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    report = {}
    for arm in args.arms.split(","):
        a, b = cells(args.fp32, arm), cells(args.bf16, arm)
        for folder in b.values():
            if json.loads((folder / "run.json").read_text())["config"].get("precision") != "bf16":
                print(f"{folder} was not distilled with --precision bf16", file=sys.stderr)
                return 2
        for model in args.models.split(","):
            fp = {s: accuracy(f, model) * 100 for s, f in a.items() if accuracy(f, model) is not None}
            bf = {s: accuracy(f, model) * 100 for s, f in b.items() if accuracy(f, model) is not None}
            diff = paired_difference(bf, fp)
            report[f"{arm}/{model}"] = {"fp32": fp, "bf16": bf, "difference": diff}
            ci = (f"[{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}]" if diff and diff["ci95"] else "(one seed)")
            print(f"{arm} {model}: fp32 {_row(fp)} | bf16 {_row(bf)} | bf16 - fp32 "
                  + (f"{diff['mean']:+.2f} {ci} over seeds {diff['seeds']}" if diff else "no shared seed"))
        shared = sorted(set(a) & set(b))
        if shared:
            fs, bs = [step_seconds(a[s]) for s in shared], [step_seconds(b[s]) for s in shared]
            report[f"{arm}/step_s"] = {"fp32": fs, "bf16": bs}
            print(f"{arm} distillation s per step (run.json, seeds {shared}): fp32 {[round(x, 2) for x in fs]}, "
                  f"bf16 {[round(x, 2) for x in bs]} (not side by side: other days' loads)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _row(values: dict[int, float]) -> str:
    return ", ".join(f"s{s} {v:.1f}" for s, v in sorted(values.items())) or "-"


if __name__ == "__main__":
    sys.exit(main())
