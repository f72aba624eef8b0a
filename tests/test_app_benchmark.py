"""Benchmark (skipped unless HPD_BENCH=1): engine steps/s with one and two pages attached and polling vs
headless, same run config, interleaved; the time from clicking Start to the first image on the page; and
Compare's two runs stepping in turn vs one after the other; and what a page costs the server in CPU seconds
per second (every thread of this process but the runs' and the test's own, read from /proc), a figure the
machine's load does not move the way it moves steps/s.

    HPD_BENCH=1 OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -s tests/test_app_benchmark.py
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from hpd_app.configs import parse_config
from hpd_app.processjob import config_argv
from test_app_browser import ARGS, CHROMIUM, configure_small, open_page, pick
from test_app_fixtures import served

CONFIG = {"method": "pixel", "steps_per_space": 30, "batch_real": 32}
ROUNDS = int(os.environ.get("HPD_BENCH_ROUNDS", "4"))

pytestmark = pytest.mark.skipif(os.environ.get("HPD_BENCH") != "1", reason="benchmark: set HPD_BENCH=1")


def _thread_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) of every live thread of this process, by native thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended between listing and reading
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _children_cpu_s() -> dict[str, tuple[str, float]]:
    """CPU seconds of every process descended from this one, by "p<pid>", as ("run", s) for Python
    processes (the studio's runs, forked from its forkserver) and ("browser", s) for the rest (Chromium
    and Playwright's driver)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                head, rest = (proc / "stat").read_text().rsplit(")", 1)
            except OSError:
                continue
            fields = rest.split()
            stats[int(proc.name)] = (head.split("(", 1)[1], int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    ours, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, (_, ppid, _) in stats.items() if ppid in frontier} - ours
        ours |= frontier
    return {f"p{pid}": ("run" if stats[pid][0].startswith("python") else "browser", stats[pid][2]) for pid in ours}


class ServerCpu:
    """Samples every thread's CPU time while a case runs and splits it into the runs' threads (named
    "run:..." by RunController) and processes (the studio's runs in processes of their own), this test's
    main thread (Playwright's client), the browser's processes, and the rest: the server, i.e. Gradio's
    event loop and workers and our handlers. Threads and processes that end between samples lose at most
    one interval, so the interval is short (0.2 s; a sample costs a few ms)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.last, self.kind = interval, {}, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        for t in threading.enumerate():
            if t.native_id is not None:
                self.kind[t.native_id] = ("run" if t.name.startswith("run:") else
                                          "test" if t is threading.main_thread() or t is self.thread else "server")
        self.last.update(_thread_cpu_s())
        for key, (kind, spent) in _children_cpu_s().items():
            self.kind[key], self.last[key] = kind, spent

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._sample()
        self.base, self.t0 = dict(self.last), time.perf_counter()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self._sample()
        self.wall = time.perf_counter() - self.t0

    def per_second(self, kind: str) -> float:
        """Core-seconds per second spent by the threads of `kind` over the case."""
        spent = sum(v - self.base.get(tid, 0.0) for tid, v in self.last.items()
                    if self.kind.get(tid, "server") == kind)
        return spent / self.wall


def headless(run_dir: Path) -> float:
    """Engine steps/s of the same run as `python -m engine distill` (what headless is to a user): a
    process of its own, as the studio's runs are, with what every command sets up (the allocator)."""
    argv = [sys.executable, "-m", "engine", "distill", *config_argv(parse_config(CONFIG)), "--out", str(run_dir),
            "--threads", str(torch.get_num_threads())]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["state"] == "finished"
    return meta["steps_done"] / meta["elapsed_s"]


def attached(page, runs: Path) -> tuple[float, float]:
    """(engine steps/s, seconds from the Start click to the first grid image) with the page polling."""
    t0 = time.perf_counter()
    page.get_by_role("button", name="Start", exact=True).click()
    page.locator("#grid-a img").wait_for(state="visible", timeout=120_000)
    first_image = time.perf_counter() - t0
    page.locator("#status").get_by_text(re.compile("finished")).wait_for(timeout=300_000)
    run_id = re.search(r"\d{8}-\d{6}-pixel-[0-9a-f]{6}", page.locator("#status").inner_text()).group(0)
    meta = json.loads((runs / run_id / "run.json").read_text())
    return meta["steps_done"] / meta["elapsed_s"], first_image


def attached_two(context, url, runs: Path) -> float:
    """Engine steps/s of a run watched by two pages at once (a reload and a second tab, as the browser
    test does): the case that stepped at ~0.2 steps/s at times in session 6."""
    page = open_page(context, url)
    configure_small(page, steps=CONFIG["steps_per_space"], batch_real=CONFIG["batch_real"])
    pick(page, "method", "Pixel")
    page.get_by_role("button", name="Start", exact=True).click()
    page.locator("#grid-a img").wait_for(state="visible", timeout=120_000)
    second = context.new_page()
    second.goto(url)
    page.reload()
    page.locator("#status").get_by_text(re.compile("finished")).wait_for(timeout=600_000)
    run_id = re.search(r"\d{8}-\d{6}-pixel-[0-9a-f]{6}", page.locator("#status").inner_text()).group(0)
    meta = json.loads((runs / run_id / "run.json").read_text())
    return meta["steps_done"] / meta["elapsed_s"]


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def niced_chromium(folder: Path) -> str:
    """A Chromium that runs at nice 19: the page's own rendering then yields the CPU to the run, as a
    browser on the user's machine would, so what remains of the cost is the server's (Gradio and our
    handlers)."""
    script = folder / "chromium-nice19"
    script.write_text(f'#!/bin/sh\nexec nice -n 19 {CHROMIUM} "$@"\n')
    script.chmod(0o755)
    return str(script)


def one_page(browser, url, runs: Path) -> tuple[float, float]:
    # A fresh browser profile each time: an empty page, so the first image is this run's.
    context = browser.new_context(viewport={"width": 1400, "height": 1300})
    page = open_page(context, url)
    configure_small(page, steps=CONFIG["steps_per_space"], batch_real=CONFIG["batch_real"])
    pick(page, "method", "Pixel")
    result = attached(page, runs)
    context.close()
    return result


def test_page_attached_vs_headless(tmp_path):
    """Per round, interleaved: headless, one page, one page whose browser runs at nice 19, two pages.
    The niced browser separates the two candidate costs of a page: Chromium's own work on the server's
    cores (gone when the browser is on another machine) and the server's per-poll work."""
    from playwright.sync_api import sync_playwright
    runs = tmp_path / "runs"
    rates: dict[str, list[float]] = {}
    server: dict[str, list[ServerCpu]] = {}
    firsts: list[float] = []
    with served(runs, tmp_path / "gradio") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        niced = p.chromium.launch(executable_path=niced_chromium(tmp_path), args=ARGS, headless=True)
        for k in range(ROUNDS):  # interleaved, so drifting machine load hits every case alike
            with ServerCpu() as cpu:
                rates.setdefault("headless", []).append(headless(tmp_path / f"headless{k}"))
            server.setdefault("headless", []).append(cpu)
            with ServerCpu() as cpu:
                rate, first = one_page(browser, url, runs)
            server.setdefault("one page", []).append(cpu)
            rates.setdefault("one page", []).append(rate)
            firsts.append(first)
            with ServerCpu() as cpu:
                rate, _ = one_page(niced, url, runs)
            server.setdefault("one page, browser at nice 19", []).append(cpu)
            rates.setdefault("one page, browser at nice 19", []).append(rate)
            context = browser.new_context(viewport={"width": 1400, "height": 1300})
            with ServerCpu() as cpu:
                rates.setdefault("two pages", []).append(attached_two(context, url, runs))
            server.setdefault("two pages", []).append(cpu)
            context.close()
        niced.close()
        browser.close()
    print(f"\nconfig {CONFIG}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load {os.getloadavg()[0]:.2f}")
    base = _median(rates["headless"])
    for case, xs in rates.items():
        print(f"{case}: steps/s {[round(x, 3) for x in xs]} median {_median(xs):.3f}, "
              f"ratio to headless {_median(xs) / base:.3f}")
    print("CPU core-seconds per second over each case (medians; the case spans the page's opening and setup too):")
    for case, cpus in server.items():
        cells = ", ".join(f"{kind} {_median([c.per_second(kind) for c in cpus]):.3f}"
                          for kind in ("server", "run", "test", "browser"))
        print(f"  {case}: {cells}")
    print(f"Start -> first image on the page, s {[round(x, 2) for x in firsts]}")


def test_compare_interleaved_vs_one_after_the_other(tmp_path):
    """Compare's two runs (H-PD, GLaD) as the studio runs them, each in a process of its own stepping in
    turn, against the same two runs one after the other: wall time from start to both finished."""
    from engine import Turns
    from engine.run import remote
    config = {"method": "hpd", "steps_per_space": 4, "batch_real": 32}
    walls: dict[str, list[float]] = {"interleaved": [], "one after the other": []}
    remote.warm_up()
    for k in range(ROUNDS):
        for mode in walls:
            runs = [remote.RemoteRun(parse_config(config | {"method": m}), tmp_path / f"{mode}-{k}-{m}")
                    for m in ("hpd", "glad")]
            t0 = time.perf_counter()
            if mode == "interleaved":
                turns = Turns(remote.context())
                controllers = [remote.RemoteController(r, turns) for r in runs]
                for c in controllers:
                    c.start()
                for c in controllers:
                    c.wait()
            else:
                controllers = []
                for r in runs:
                    controllers.append(remote.RemoteController(r))
                    controllers[-1].start()
                    controllers[-1].wait()
            walls[mode].append(time.perf_counter() - t0)
            for c in controllers:
                c.close()
            assert all(r.status == "finished" for r in runs)
    print(f"\nconfig {config} (GLaD: the same total steps), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load {os.getloadavg()[0]:.2f}")
    for mode, xs in walls.items():
        print(f"{mode}: wall s {[round(x, 1) for x in xs]} median {_median(xs):.1f}")
    print(f"ratio interleaved / one after the other (medians) "
          f"{_median(walls['interleaved']) / _median(walls['one after the other']):.3f}")
