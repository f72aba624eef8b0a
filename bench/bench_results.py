"""RESULTS.md's experiments, as suites of `python -m engine compare`: Pixel vs GLaD (its best cut by held-out
accuracy, per seed) vs H-PD with the distance and with "last", at equal total steps on Fashion-MNIST with the
embedded prior, paired over seeds and evaluated on five networks.

Every cell is a run folder under results/compare/<suite>/ and the compare command skips finished cells
and resumes killed ones, so the whole script resumes; what a finished cell needs to be skipped (run.json,
eval.json, synthetic.pt) is kept in git (results/compare/.gitignore drops the rest), so a session on a
fresh machine continues where the last one committed:

    python bench/bench_results.py --suite dm1 --threads 2               # run (or continue) the suite
    python bench/bench_results.py --suite dm1 --print                   # the compare command it runs
    python bench/bench_results.py --suite dm1 --compare-table           # the suite's compare.md
    python bench/bench_results.py --suite dm1 --scores --repeats 3 --report   # rewrite it from the cells so far

The per-seed script of sessions 1-6 (one seed, ConvNet-3 only, results in bench/results/results.json) is
replaced by this one; its results file stays readable:

    python bench/bench_results.py --suite dm1 --table [--results bench/results/results.json] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass(frozen=True)
class Suite:
    objective: str
    ipc: int
    steps_per_space: int           # H-PD's; GLaD and Pixel get the same total (compare's default)
    glad_cuts: tuple[int, ...]     # GLaD's cuts, the best by held-out accuracy per seed
    extra: tuple[str, ...] = ()    # more distill flags (TESLA's buffers and trajectory settings)
    protocol: str | None = None    # the suite's evaluation protocol; None: --protocol (dc)


# Short CPU trajectories: 2 experts x 3 epochs (`python -m engine buffers ... --epochs 3`), so starts <= 2.
TESLA_CPU = ("--buffers", "runs/buffers/fashion-mnist", "--expert-epochs", "2", "--max-start-epoch", "2")
SUITES = {
    "dm1": Suite("dm", 1, 20, (1, 3, 5)),
    "dsa1": Suite("dsa", 1, 20, (1, 3, 5)),
    "tesla1": Suite("tesla", 1, 20, (1, 3, 5), TESLA_CPU),
    "dm10": Suite("dm", 10, 20, (1, 3, 5)),
    # A DSA step at IPC 10 is one DC iteration: 10 matching updates with 50 network epochs between them,
    # ~240-300 s on one CPU thread. 2 steps per space make 100 updates per run, as many as dsa1's.
    "dsa10": Suite("dsa", 10, 2, (1, 3, 5)),
    # A TESLA step at IPC 10 costs ~30-35 s on one CPU thread, so 4 steps per space, not the paper's 100.
    "tesla10": Suite("tesla", 10, 4, (1, 3, 5), TESLA_CPU),
    # SRe²L (issue 16): the proxy as teacher, evaluated by its relabelling (the teacher's soft labels on
    # the student's crops); 20 steps per space as DM's, far below SRe²L's 1,000-4,000 iterations.
    "sre2l1": Suite("sre2l", 1, 20, (1, 3, 5), protocol="sre2l"),
    "sre2l10": Suite("sre2l", 10, 20, (1, 3, 5), protocol="sre2l"),
}


def compare_argv(suite_name: str, args: argparse.Namespace) -> list[str]:
    """The `python -m engine compare` arguments of a suite."""
    s = SUITES[suite_name]
    cuts = args.glad_cuts.split(",") if args.glad_cuts else [str(c) for c in s.glad_cuts]
    glad = ["--glad-cuts", ",".join(cuts)] if len(cuts) > 1 else ["--glad-cut", cuts[0]]
    argv = ["compare", "--objective", s.objective, "--ipc", str(s.ipc), "--steps-per-space", str(s.steps_per_space),
            "--methods", "pixel,glad,hpd", "--selections", "distance,last", *glad,
            # Every cell holds out the same 100 training images per class (so all train on the same data) and
            # scores each space on them: H-PD's accuracy pick and GLaD's cut pick, never on the test split.
            "--accuracy-pick", "--eval-repeats", "1", "--eval-epochs", str(args.eval_epochs),
            "--preview-every", "10000", *s.extra,
            "--seeds", args.seeds, "--repeats", str(args.repeats), "--protocol", s.protocol or args.protocol,
            "--epochs", str(args.epochs), "--out", str(args.runs / suite_name), "--cache", str(args.cache),
            "--threads", str(args.threads), "--device", args.device, "--test-precision", args.test_precision]
    if args.train_precision != "fp32":  # absent at fp32, so the suites run before the flag keep their command
        argv += ["--train-precision", args.train_precision]
    if args.models:
        argv += ["--models", args.models]
    if args.scores:
        argv += ["--scores"]
    return argv


def table(suite_name: str, results: dict, seed: int) -> str:
    """The per-seed table of the sessions 1-6 script, from its results file."""
    rows = ["| method | test accuracy, % (space) | held-out accuracy per space, % | distillation wall s |",
            "| --- | --- | --- | --- |"]
    prefix, suffix = f"{suite_name}/", f"/seed{seed}"
    for key, r in results.items():
        if not (key.startswith(prefix) and key.endswith(suffix)):
            continue
        picked, last = r["test"]["picked"], r["test"]["last"]
        acc = f"{100 * picked['mean']:.1f} ± {100 * picked['std']:.1f} ({picked['space']})"
        if last["space"] != picked["space"]:
            acc += f"; last space: {100 * last['mean']:.1f} ± {100 * last['std']:.1f}"
        held = " ".join(f"{100 * s['heldout_accuracy']:.1f}" for s in r["spaces"])
        rows.append(f"| {r['case']['name']} | {acc} | {held} | {r['distill_wall_s']:.0f} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=list(SUITES), default="dm1")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--models", default=None, help="evaluation models (default: all five)")
    p.add_argument("--repeats", type=int, default=5, help="evaluation networks per model")
    p.add_argument("--protocol", default="dc", help="evaluation protocol (RESULTS.md: dc)")
    p.add_argument("--epochs", type=int, default=300, help="evaluation epochs (RESULTS.md: 300)")
    p.add_argument("--eval-epochs", type=int, default=300, help="epochs of the held-out per-space evaluation")
    p.add_argument("--glad-cuts", default=None, help="override the suite's GLaD cuts (one cut: no sweep)")
    p.add_argument("--scores", action="store_true", help="add DD-Ranking's LRS/ARS on the backbone")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", type=Path, default=Path("results/compare"), help="one folder per suite goes here")
    p.add_argument("--cache", type=Path, default=Path("results/compare/baselines"),
                   help="baselines shared by every suite")
    p.add_argument("--test-precision", default="bf16", choices=("fp32", "bf16"),
                   help="the evaluation's test passes (default bf16: it moved a network's accuracy by at most 0.12 "
                        "points and cut the test passes' time 1.8-4x, BENCHMARKS.md)")
    p.add_argument("--train-precision", default="fp32", choices=("fp32", "bf16"),
                   help="the evaluation's training arithmetic (default fp32, as every suite so far; bf16: "
                        "BENCHMARKS.md, \"Evaluation training in bf16\")")
    p.add_argument("--print", action="store_true", help="print the compare command and exit")
    p.add_argument("--compare-table", action="store_true", help="print the suite's compare.md and exit")
    p.add_argument("--report", action="store_true",
                   help="rewrite the suite's compare.json/compare.md from its finished cells, running nothing")
    p.add_argument("--table", action="store_true", help="print the old per-seed table from --results and exit")
    p.add_argument("--results", type=Path, default=Path("bench/results/results.json"))
    p.add_argument("--seed", type=int, default=0, help="the old table's seed")
    args = p.parse_args()
    if args.table:
        print(table(args.suite, json.loads(args.results.read_text()) if args.results.exists() else {}, args.seed))
        return 0
    if args.compare_table:
        md = args.runs / args.suite / "compare.md"
        print(md.read_text() if md.exists() else f"{md} does not exist yet; run the suite first")
        return 0
    argv = compare_argv(args.suite, args) + (["--report-only"] if args.report else [])
    if args.print:
        print(shlex.join([".venv/bin/python", "-m", "engine", *argv]))
        return 0
    from engine.cli import main as engine_main
    return engine_main(argv)


if __name__ == "__main__":
    sys.exit(main())
