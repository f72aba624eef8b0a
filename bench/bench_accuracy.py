"""Accuracy of Pixel DM/DC/DSA and random real images on Fashion-MNIST (ConvNet-3, 5 evaluations).

Each finished case is stored in the results JSON at once, so an interrupted benchmark resumes where it
stopped:  python bench/bench_accuracy.py --suite sanity --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.data import RealSampler, load_dataset  # noqa: E402
from engine.run import Run, RunConfig  # noqa: E402
from engine.evaluate import evaluate_synset, get_protocol  # noqa: E402
from engine.runtime import tune_allocator  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    objective: str | None   # None: random real images, no distillation
    ipc: int
    iterations: int
    eval_epochs: int
    protocol: str = "dc"


SUITES = {
    # The reference's sanity figures: DM from real init after 27 iterations vs random real, 300-epoch DSA eval.
    "sanity": [Case("random real", None, 1, 0, 300), Case("DM", "dm", 1, 27, 300)],
    "ipc1": [Case("random real", None, 1, 0, 1000), Case("DM", "dm", 1, 200, 1000),
             Case("DC", "dc", 1, 100, 1000), Case("DSA", "dsa", 1, 100, 1000)],
    # IPC 10 at the largest budget that fits a 3-hour session on 2 cores beside other work: an outer
    # DC/DSA iteration costs ~240 CPU-s here, an IPC 10 evaluation ~10x an IPC 1 one, so 3 outer
    # iterations and the 300-epoch evaluation.
    "ipc10": [Case("random real", None, 10, 0, 300), Case("DM", "dm", 10, 200, 300),
              Case("DC", "dc", 10, 3, 300), Case("DSA", "dsa", 10, 3, 300)],
}


def run_case(case: Case, seed: int) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    if case.objective is None:
        sampler = RealSampler(load_dataset("fashion-mnist", "train"), "cpu", torch.Generator().manual_seed(seed))
        images, labels = sampler.sample_all(case.ipc)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run = Run(RunConfig(method="pixel", objective=case.objective, ipc=case.ipc,
                                steps_per_space=case.iterations, seed=seed), Path(tmp) / "run")
            while run.step():
                pass
            saved = torch.load(Path(tmp) / "run" / "synthetic.pt", weights_only=True)
        images, labels = saved["images"], saved["labels"]
    distill_s = time.perf_counter() - start
    ev = evaluate_synset(images, labels, load_dataset("fashion-mnist", "test"), "convnet",
                         get_protocol(case.protocol, case.eval_epochs), repeats=5, seed=seed)
    return asdict(case) | {"accuracies": ev.accuracies, "mean": ev.mean, "std": ev.std,
                           "distill_wall_s": distill_s, "eval_wall_s": ev.wall_s,
                           "cpu_s": time.process_time() - cpu, "threads": torch.get_num_threads(),
                           "load_after": os.getloadavg()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--suite", choices=list(SUITES), default="sanity")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", nargs="*", default=None, help="only these case names (default: the whole suite)")
    p.add_argument("--iterations", type=int, default=None, help="override the cases' distillation iterations")
    p.add_argument("--results", type=Path, default=Path("bench/results/accuracy.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tune_allocator()
    for case in SUITES[args.suite]:
        key = f"{args.suite}/{case.name}/ipc{case.ipc}/seed{args.seed}"
        if (args.cases and case.name not in args.cases) or key in _load(args.results):
            continue
        if args.iterations is not None and case.objective is not None:
            case = replace(case, iterations=args.iterations)
        print(f"{key}: running (load {os.getloadavg()[0]:.1f})", flush=True)
        r = run_case(case, args.seed)
        done = _load(args.results)  # re-read: another process may have stored a case meanwhile
        done[key] = r
        args.results.write_text(json.dumps(done, indent=1))
        print(f"{key}: {100 * r['mean']:.1f} ± {100 * r['std']:.1f}% "
              f"(distill {r['distill_wall_s']:.0f} s, eval {r['eval_wall_s']:.0f} s)", flush=True)


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


if __name__ == "__main__":
    main()
