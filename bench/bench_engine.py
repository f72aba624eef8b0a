"""Costs inside the H-PD engine, each case in a fresh subprocess (so peak RSS is its own):

    python bench/bench_engine.py --threads 2 [--cases single chunked nodistance lastdistance distance glad hpd eval]
    python bench/bench_engine.py --threads 1 --cases dm1 dm10 dsa1 dsa10 tesla1 tesla10   # per-objective steps

Uses the shipped embedded prior and proxy when present, else randomly initialised ones of the same
architecture (step times do not depend on the weights; say which in BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = {
    # name: (RunConfig overrides, steps to time)
    # Every run measures the distance unless told not to: the cases that time something else switch it off.
    "single": ({"method": "hpd", "objective": "dm", "ipc": 10, "sg_batch": "single", "selection": "last",
                "distance": False}, 5),
    "chunked": ({"method": "hpd", "objective": "dm", "ipc": 10, "sg_batch": "chunked", "sg_chunk": 10,
                 "selection": "last", "distance": False}, 5),
    "nodistance": ({"method": "hpd", "objective": "dm", "ipc": 1, "selection": "last", "distance": False,
                    "preview_every": 10_000}, 10),
    # nodistance with the ConvNet's no-grad pooling put back to avg_pool2d: what the strided adds save
    "avgpool2d": ({"method": "hpd", "objective": "dm", "ipc": 1, "selection": "last", "distance": False,
                   "preview_every": 10_000}, 10),
    # The distance measured on a run that selects by "last": its cost beside a step, whatever the basis.
    "lastdistance": ({"method": "hpd", "objective": "dm", "ipc": 1, "selection": "last", "preview_every": 10_000}, 10),
    "distance": ({"method": "hpd", "objective": "dm", "ipc": 1, "selection": "distance", "preview_every": 10_000}, 10),
    "previews": ({"method": "hpd", "objective": "dm", "ipc": 1, "selection": "distance", "preview_every": 1}, 10),
    # nodistance with --precision bf16: DM's real side (97% of a step) under bf16 autocast
    "bf16": ({"method": "hpd", "objective": "dm", "ipc": 1, "selection": "last", "distance": False,
              "preview_every": 10_000, "precision": "bf16"}, 10),
    "hpd": ({"method": "hpd", "objective": "dm", "ipc": 1}, None),   # None: the whole run
    "hpd-bf16": ({"method": "hpd", "objective": "dm", "ipc": 1, "precision": "bf16"}, None),
    "glad": ({"method": "glad", "objective": "dm", "ipc": 1}, None),
    "evaluation": ({}, None),
}


def objective_step_cases() -> dict:
    """One step of each objective at IPC 1 and 10 (GLaD at cut 5, no distance): RESULTS.md's budgets rest on
    these. TESLA reads the expert buffers RESULTS.md's suites use (git-ignored; `python -m engine buffers`)."""
    tesla = {"buffers": "runs/buffers/fashion-mnist", "expert_epochs": 2, "max_start_epoch": 2}
    steps = {("dm", 1): 5, ("dm", 10): 3, ("dsa", 1): 5, ("dsa", 10): 1, ("tesla", 1): 5, ("tesla", 10): 2}
    return {f"{objective}{ipc}": ({"method": "glad", "glad_cut": 5, "objective": objective, "ipc": ipc,
                                   "selection": "last", "distance": False, "preview_every": 10_000,
                                   **(tesla if objective == "tesla" else {})}, n)
            for (objective, ipc), n in steps.items()}


CASES |= objective_step_cases()


def components():
    import torch
    from engine.classifiers import ProxyClassifier, load_classifier
    from engine.classifiers.fashion_mnist import ARCH, CAM_LAYER, input_spec
    from engine.classifiers.small_resnet import build_small_resnet18
    from engine.generators import load_generator
    from engine.generators.embedded import EmbeddedConfig, EmbeddedGenerator
    try:
        G, which_g = load_generator("embedded:fashion-mnist"), "shipped"
    except ValueError:
        G, which_g = EmbeddedGenerator(EmbeddedConfig()).eval(), "random init"
    try:
        proxy, which_p = load_classifier("embedded:fashion-mnist"), "shipped"
    except ValueError:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            proxy, which_p = ProxyClassifier(build_small_resnet18(ARCH), input_spec(), CAM_LAYER, 10), "random init"
    return G, proxy, f"prior {which_g}, proxy {which_p}"


def evaluation_vs_distance(queue, threads: int) -> None:
    """One accuracy evaluation (the paper's explicit criterion) against one distance call (its proxy)."""
    import torch
    from engine.data import RealSampler, load_dataset
    from engine.distance import ClassRelevantDistance
    from engine.evaluate import evaluate_synset, get_protocol
    _, proxy, which = components()
    train = load_dataset("fashion-mnist", "train")
    sampler = RealSampler(train, "cpu", torch.Generator().manual_seed(0))
    syn, labels = sampler.sample_all(1)
    real, real_labels = sampler.sample_all(100)
    t = time.perf_counter()
    distance = ClassRelevantDistance(proxy, real, real_labels, 10)
    real_side = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(10):
        distance(syn, labels)
    per_call = (time.perf_counter() - t) / 10
    t = time.perf_counter()
    evaluate_synset(syn, labels, load_dataset("fashion-mnist", "test"), "convnet", get_protocol("dc", 300), 1)
    queue.put({"case": "evaluation", "distance_call_s": per_call, "distance_real_side_s": real_side,
               "evaluation_300_epochs_s": time.perf_counter() - t, "components": which,
               "load": os.getloadavg()[0], "threads": threads})


def run_case(name: str, threads: int, queue) -> None:
    import torch
    from engine.run import Run, RunConfig
    from engine.runtime import tune_allocator
    torch.set_num_threads(threads)
    tune_allocator()
    if name == "evaluation":
        return evaluation_vs_distance(queue, threads)
    if name == "avgpool2d":
        import torch.nn.functional as F
        from engine.nets import convnet
        convnet.avg_pool_2x2 = lambda x: F.avg_pool2d(x, 2)
    overrides, steps = CASES[name]
    G, proxy, which = components()
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(RunConfig(**overrides), Path(tmp) / "run", generator=G, classifier=proxy)
        t0 = time.perf_counter()
        run.prepare()
        run.step()  # the space's set-up and initial measurement are not per-step costs
        prepare_s = time.perf_counter() - t0
        wall, cpu = time.perf_counter(), time.process_time()
        n = 0
        while (steps is None or n < steps) and run.step():
            n += 1
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        queue.put({"case": name, "steps": n, "wall_per_step": wall / max(n, 1), "cpu_per_step": cpu / max(n, 1),
                   "total_wall": wall + prepare_s, "prepare_s": prepare_s, "scheme": run.state.scheme, "components": which,
                   "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                   "load": os.getloadavg()[0], "threads": threads})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    for name in args.cases:
        queue = ctx.Queue()
        proc = ctx.Process(target=run_case, args=(name, args.threads, queue))
        proc.start()
        result = queue.get()
        proc.join()
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
