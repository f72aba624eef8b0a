"""Per-iteration and evaluation cost of the pixel objectives on Fashion-MNIST (ConvNet-3, reference settings:
256 real images per class, DSA strategy color_crop_cutout_flip_scale_rotate).

    python bench/bench_speed.py --threads 2 [--cases dm1 dsa1 dsa10 dc10 eval1 eval10 test]

Prints wall seconds, CPU seconds and the load average beside every figure (the machines are shared).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.data import RealSampler, load_dataset  # noqa: E402
from engine.evaluate import accuracy, get_protocol, train_network  # noqa: E402
from engine.nets import get_network  # noqa: E402
from engine.run import Run, RunConfig  # noqa: E402
from engine.runtime import tune_allocator  # noqa: E402


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def iteration_case(objective: str, ipc: int, repeats: int):
    """Pixel steps through the engine's Run, as `distill --method pixel` runs them (first step excluded)."""
    folder = tempfile.mkdtemp(prefix="bench-speed-")
    run = Run(RunConfig(method="pixel", objective=objective, ipc=ipc, steps_per_space=repeats + 2,
                        preview_every=10_000), folder)
    run.step()  # set-up and the space's initial measurement are not per-iteration costs
    return lambda: [run.step() for _ in range(repeats)]


def eval_case(ipc: int):
    sampler = RealSampler(load_dataset("fashion-mnist", "train"), "cpu", torch.Generator().manual_seed(0))
    images, labels = sampler.sample_all(ipc)
    info = sampler.info
    return lambda: train_network(images, labels, info, "convnet", get_protocol("dc", 1000), 0, "cpu")


def test_case():
    test = load_dataset("fashion-mnist", "test")
    x, y = test.normalized(), test.labels
    net = get_network("convnet", 1, 10, 32, seed=0)
    return lambda: accuracy(net, x, y)


CASES = {
    "dm1": ("DM IPC 1, per iteration", lambda: iteration_case("dm", 1, 3), 3),
    "dsa1": ("DSA IPC 1, per iteration", lambda: iteration_case("dsa", 1, 2), 2),
    "dsa10": ("DSA IPC 10, per outer iteration (10 updates, 9 x 50 inner epochs)", lambda: iteration_case("dsa", 10, 1), 1),
    "dc10": ("DC IPC 10, per outer iteration", lambda: iteration_case("dc", 10, 1), 1),
    "eval1": ("evaluation training, IPC 1, 1000 epochs (one network)", lambda: eval_case(1), 1),
    "eval10": ("evaluation training, IPC 10, 1000 epochs (one network)", lambda: eval_case(10), 1),
    "test": ("test pass, 10,000 images", test_case, 1),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tune_allocator()
    print(f"threads {args.threads}, torch {torch.__version__}")
    for key in args.cases:
        label, build, per = CASES[key]
        fn = build()
        load = os.getloadavg()[0]
        wall, cpu = timed(fn)
        print(f"| {label} | {wall / per:.2f} s | {cpu / per:.2f} CPU-s | load {load:.2f} -> {os.getloadavg()[0]:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
