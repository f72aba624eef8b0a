"""This CPU's measured peak beside what DM's real side achieves, fp32 and bf16 (issue 18, `--precision`).

Peak: a large square matmul (`--size`, 2048 by default; 2·n³ FLOPs) in float32 and in bfloat16, the best
of `--reps` per round. DM's real side: ConvNet-3's `embed` (the network DM matches, in train mode as DM
runs it) on a real Fashion-MNIST batch (`--per-class` images of every class, normalised) in DM's chunks
(engine/objectives/dm.py EMBED_CHUNK) under no_grad, float32 and bf16 autocast as `--precision bf16` runs
it; its FLOPs are counted once by torch.utils.flop_counter.FlopCounterMode. Every round measures all four,
alternating which precision goes first. Prints a table of GFLOP/s (median over rounds) and fractions of
the peak of the same precision, with the thread count and the load before and after.

    OMP_NUM_THREADS=1 python bench/bench_peak.py --threads 1 --rounds 3 --json bench/results/peak.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data import RealSampler, load_dataset  # noqa: E402
from engine.nets import get_network  # noqa: E402
from engine.objectives import dm  # noqa: E402
from engine.objectives.dm import EMBED_CHUNK  # noqa: E402
from engine.streams import Streams  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_seconds(a: torch.Tensor, b: torch.Tensor, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return best


def embed_real(net, real: torch.Tensor, precision: str) -> torch.Tensor:
    """DM's real side, the engine's own function, under the autocast `--precision` gives it."""
    return dm.embed_real(net, real, torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"))


def embed_seconds(net, real: torch.Tensor, precision: str) -> float:
    t0 = time.perf_counter()
    embed_real(net, real, precision)
    return time.perf_counter() - t0


def count_flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="rounds, each measuring fp32 and bf16 (alternating first)")
    p.add_argument("--size", type=int, default=2048, help="side of the square matmul of the peak")
    p.add_argument("--reps", type=int, default=3, help="matmuls per round and precision (the best is kept)")
    p.add_argument("--per-class", type=int, default=64,
                   help="real images per class of DM's batch (a DM step takes --batch-real, 256 by default, in the "
                        "same chunks: the rate per chunk is the same)")
    p.add_argument("--width", type=int, default=128, help="ConvNet-3 width (the matching network's default)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    g = torch.Generator().manual_seed(0)
    mats = {prec: (torch.randn(args.size, args.size, generator=g).to(dt), torch.randn(args.size, args.size, generator=g).to(dt))
            for prec, dt in DTYPES.items()}
    mm_flops = 2 * args.size ** 3
    train = load_dataset("fashion-mnist", "train", args.data_root)
    real, _ = RealSampler(train, "cpu", Streams(0)["real"]).sample_all(args.per_class)
    info = train.info
    net = get_network("convnet", info.channels, info.num_classes, info.resolution, seed=0, width=args.width)
    net.train()  # as DM runs it (instance norm: per-sample statistics either way)
    for param in net.parameters():
        param.requires_grad_(False)
    dm_flops = {prec: count_flops(lambda: embed_real(net, real, prec)) for prec in DTYPES}
    for prec in DTYPES:  # warm-up: the first call of each kernel pays for its set-up
        torch.mm(*mats[prec])
        embed_real(net, real[:EMBED_CHUNK], prec)

    times: dict[str, dict[str, list[float]]] = {"matmul": {p: [] for p in DTYPES}, "dm_real": {p: [] for p in DTYPES}}
    for r in range(args.rounds):
        order = ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")
        for prec in order:
            times["matmul"][prec].append(matmul_seconds(*mats[prec], args.reps))
            times["dm_real"][prec].append(embed_seconds(net, real, prec))
        print(json.dumps({"round": r, "order": order, **{f"{k}_{p}_s": round(v[p][-1], 4)
                                                          for k, v in times.items() for p in DTYPES}}), flush=True)
    load_after = os.getloadavg()

    flops = {"matmul": {p: mm_flops for p in DTYPES}, "dm_real": dm_flops}
    rate = {k: {p: flops[k][p] / statistics.median(times[k][p]) / 1e9 for p in DTYPES} for k in times}
    print(f"\ntorch {torch.__version__}, {platform.processor() or platform.machine()}, threads {args.threads} "
          f"(torch.get_num_threads() {torch.get_num_threads()}), load (1/5/15 min) before "
          f"{'/'.join(f'{x:.2f}' for x in load_before)}, after {'/'.join(f'{x:.2f}' for x in load_after)}, "
          f"{args.rounds} rounds; DM real side: {len(real)} images in chunks of {EMBED_CHUNK}, ConvNet-3 width "
          f"{args.width}, {dm_flops['fp32'] / len(real) / 1e6:.1f} MFLOP per image")
    print("| workload | precision | GFLOP per call | median s | GFLOP/s | fraction of the same precision's peak |")
    print("|---|---|---|---|---|---|")
    for k, label in (("matmul", f"matmul {args.size}² (peak)"), ("dm_real", "DM real side (ConvNet-3 embed)")):
        for prec in DTYPES:
            print(f"| {label} | {prec} | {flops[k][prec] / 1e9:.2f} | {statistics.median(times[k][prec]):.3f} | "
                  f"{rate[k][prec]:.1f} | {rate[k][prec] / rate['matmul'][prec]:.2f} |")
    print(f"bf16/fp32 speed-up: matmul {rate['matmul']['bf16'] / rate['matmul']['fp32']:.2f}x, "
          f"DM real side {rate['dm_real']['bf16'] / rate['dm_real']['fp32']:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "threads": args.threads, "rounds": args.rounds, "size": args.size, "per_class": args.per_class,
            "images": len(real), "chunk": EMBED_CHUNK, "width": args.width, "torch": torch.__version__,
            "load_before": load_before, "load_after": load_after, "flops": flops, "seconds": times,
            "gflops_per_s": rate}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
