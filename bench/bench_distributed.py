"""One process vs several under torchrun for `distill` on the embedded default (issue 16).

Per round, alternating: the same DM run (Pixel or H-PD, IPC 10 by default) in one process with --threads
T, and under `torchrun --standalone --nproc-per-node N` with T // N threads each; per run the step time
(run.json: elapsed_s / steps_done, set-up excluded), the wall time, and the peak resident memory of
each process (the largest rank's, from /proc while it runs). Prints the medians, the ratio and the load.

    python bench/bench_distributed.py --rounds 2 --processes 2 --threads 2 [--method hpd] [--ipc 10] [--steps 4]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb(pids: set[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[pid] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return out


def _children(pid: int) -> set[int]:
    """pid and every descendant (torchrun's workers)."""
    found, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            if k not in found:
                found.add(k)
                frontier.append(k)
    return found


def run_once(argv: list[str], out: Path, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv + ["--out", str(out), "--threads", str(threads)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak: dict[int, float] = {}

    def watch() -> None:
        while proc.poll() is None:
            for pid, mb in _rss_mb(_children(proc.pid)).items():
                peak[pid] = max(peak.get(pid, 0.0), mb)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    watcher.join(1)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err[-2000:]}")
    meta = json.loads((out / "run.json").read_text())
    python_peaks = sorted(peak.values(), reverse=True)
    return {"step_s": meta["elapsed_s"] / meta["steps_done"], "wall_s": time.perf_counter() - t0,
            "peak_rss_mb": python_peaks[0] if python_peaks else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="threads of the one-process run; each of N gets T // N")
    p.add_argument("--method", default="pixel")
    p.add_argument("--objective", default="dm")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--steps", type=int, default=4, help="steps per space (Pixel: its steps)")
    args = p.parse_args()
    common = ["distill", "--method", args.method, "--objective", args.objective, "--ipc", str(args.ipc),
              "--steps-per-space", str(args.steps), "--preview-every", "1000", "--device", "cpu"]
    one = [sys.executable, "-m", "engine", *common]
    many = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.processes),
            "-m", "engine", *common]
    rows: dict[str, list[dict]] = {"1 process": [], f"{args.processes} processes": []}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            rows["1 process"].append(run_once(one, Path(tmp) / f"one{k}", args.threads))
            rows[f"{args.processes} processes"].append(
                run_once(many, Path(tmp) / f"many{k}", max(1, args.threads // args.processes)))
            load.append(os.getloadavg()[0])
    print(f"{args.method} {args.objective} IPC {args.ipc}, {args.steps} steps per space, {args.rounds} rounds, "
          f"{args.threads} threads in all; load {min(load):.2f}-{max(load):.2f}")
    print("| run | step s (median) | wall s (median) | peak RSS per process, MB |")
    print("|---|---|---|---|")
    med = {}
    for name, rs in rows.items():
        med[name] = statistics.median(r["step_s"] for r in rs)
        each = ", ".join(f"{r['step_s']:.2f}" for r in rs)
        print(f"| {name} | {med[name]:.2f} ({each}) | {statistics.median(r['wall_s'] for r in rs):.1f} | "
              f"{max(r['peak_rss_mb'] or 0 for r in rs):.0f} |")
    a, b = med.values()
    print(f"speed-up per step, {args.processes} processes over 1: {a / b:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
