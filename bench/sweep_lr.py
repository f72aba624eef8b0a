"""Learning-rate sweep of H-PD on the embedded Fashion-MNIST prior, scored on held-out training images.

The paper's rates were tuned on StyleGAN-XL, whose features are clipped to [-10, 10]; the embedded
prior's features are scaled differently, so its rates are searched here. Every (lr_w, lr_f) pair runs
a short H-PD journey with the accuracy pick on (held-out split, never the test split) and is stored at
once, so an interrupted sweep resumes:

    python bench/sweep_lr.py --objective dm --steps 5 --threads 1 --pairs 0.01:10 0.001:0.1 ...
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.run import Run, RunConfig  # noqa: E402
from engine.runtime import tune_allocator  # noqa: E402


def run_pair(args: argparse.Namespace, lr_w: float, lr_f: float) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    config = RunConfig(method="hpd", objective=args.objective, ipc=args.ipc, steps_per_space=args.steps,
                       lr_w=lr_w, lr_f=lr_f, accuracy_pick=True, eval_repeats=args.eval_repeats,
                       eval_epochs=args.eval_epochs, batch_real=args.batch_real, buffers=args.buffers,
                       expert_epochs=args.expert_epochs, max_start_epoch=args.max_start_epoch,
                       preview_every=10_000, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(config, Path(tmp) / "run")
        while run.step():
            pass
    spaces = [{"cuts": list(s.cuts), "first_distance": s.distances[0], "best_distance": s.best_distance,
               "best_step": s.best_step, "accuracy": s.accuracy} for s in run.state.spaces]
    return {"lr_w": lr_w, "lr_f": lr_f, "spaces": spaces, "best_accuracy": max(s.accuracy for s in run.state.spaces),
            "selected_space": run.state.selected_space, "pixel_lr": run.state.spaces[-1].lr_f,
            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "threads": torch.get_num_threads(), "load_after": os.getloadavg()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--objective", default="dm")
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--steps", type=int, default=5, help="steps per space")
    p.add_argument("--pairs", nargs="+", required=True, help="lr_w:lr_f pairs")
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--eval-epochs", type=int, default=300)
    p.add_argument("--eval-repeats", type=int, default=2)
    p.add_argument("--buffers", default=None)
    p.add_argument("--expert-epochs", type=int, default=2, help="TESLA (short CPU trajectories)")
    p.add_argument("--max-start-epoch", type=int, default=2, help="TESLA")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=None, help="default: bench/results/sweep_lr_<objective>.json")
    args = p.parse_args()
    args.results = args.results or Path(f"bench/results/sweep_lr_{args.objective}.json")
    torch.set_num_threads(args.threads)
    tune_allocator()
    for pair in args.pairs:
        lr_w, lr_f = (float(x) for x in pair.split(":"))
        key = f"{args.objective}/ipc{args.ipc}/steps{args.steps}/br{args.batch_real}/{lr_w:g}:{lr_f:g}/seed{args.seed}"
        done = json.loads(args.results.read_text()) if args.results.exists() else {}
        if key in done:
            print(f"{key}: done, best held-out accuracy {done[key]['best_accuracy']:.4f}")
            continue
        result = run_pair(args, lr_w, lr_f)
        done = json.loads(args.results.read_text()) if args.results.exists() else {}
        done[key] = result
        args.results.write_text(json.dumps(done, indent=1))
        per_space = " ".join(f"{s['accuracy']:.3f}@{s['best_step']}" for s in result["spaces"])
        print(f"{key}: best {result['best_accuracy']:.4f} | per space {per_space} | {result['wall_s']:.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
