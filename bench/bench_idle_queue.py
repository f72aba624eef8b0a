"""What an idle studio server costs the run it serves (issue 15): a headless run in the server's process with
Gradio's idle queue loops waking at its Linux defaults (1 ms, progress 10 ms) and at ours (hpd_app.app:
20 ms, 100 ms), alternating, no page attached. Prints per setting the run's steps/s, the CPU core-seconds per second of
the server's threads (every thread but the run's and this script's) and the load.

    OMP_NUM_THREADS=1 python bench/bench_idle_queue.py --rounds 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from engine import Run, RunController  # noqa: E402
from hpd_app import build_app, launch_app  # noqa: E402
from hpd_app.app import IDLE_WAKE_S, PROGRESS_WAKE_S, quiet_idle_queue  # noqa: E402
from hpd_app.configs import parse_config  # noqa: E402
from test_app_benchmark import CONFIG, ServerCpu  # noqa: E402


def set_wakes(demo, quiet: bool) -> None:
    """Ours (hpd_app.app.quiet_idle_queue) or Gradio's Linux defaults (1 ms, 10 ms)."""
    demo._queue.sleep_when_free, demo._queue.progress_update_sleep_when_free = 0.001, 0.01
    if quiet:
        quiet_idle_queue(demo)


def one(demo, quiet: bool, folder: Path) -> tuple[float, float]:
    set_wakes(demo, quiet)
    run = Run(parse_config(CONFIG), folder)
    with ServerCpu() as cpu:
        controller = RunController(run)
        controller.start()
        controller.wait()
    return run.state.steps_done / run.state.elapsed_s, cpu.per_second("server")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="idle-queue-"))
    os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")
    demo = build_app(tmp / "runs")
    launch_app(demo, tmp / "runs", port=None, prevent_thread_lock=True, quiet=True)
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    loads = [os.getloadavg()[0]]
    for k in range(args.rounds):
        for quiet in (results if k % 2 == 0 else reversed(list(results))):
            results[quiet].append(one(demo, quiet, tmp / f"run-{k}-{int(quiet)}"))
        loads.append(os.getloadavg()[0])
    print(f"config {CONFIG}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {args.rounds} rounds, "
          f"load {min(loads):.2f}-{max(loads):.2f}")
    base = statistics.median(r for r, _ in results[False])
    for quiet, xs in results.items():
        rate = statistics.median(r for r, _ in xs)
        label = (f"ours ({IDLE_WAKE_S * 1000:g} ms, {PROGRESS_WAKE_S * 1000:g} ms)" if quiet
                 else "Gradio's (1 ms, 10 ms)")
        print(f"idle wake-ups {label}: steps/s {[round(r, 3) for r, _ in xs]} median {rate:.3f} "
              f"(x{rate / base:.3f}); server core-s/s {[round(c, 3) for _, c in xs]}")
    closer = threading.Thread(target=demo.close, daemon=True)
    closer.start()
    closer.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
