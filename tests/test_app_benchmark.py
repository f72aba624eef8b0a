"""Benchmark (skipped unless HPD_BENCH=1): engine steps/s with the page attached and polling vs headless,
same run config, interleaved; and the time from clicking Start to the first image on the page.

    HPD_BENCH=1 OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -s tests/test_app_benchmark.py
"""
from __future__ import annotations

import json
import os
import re
import statistics
import time
from pathlib import Path

import pytest

from engine import Run, RunController
from hpd_app.configs import parse_config
from test_app_browser import ARGS, CHROMIUM, configure_small, open_page, pick
from test_app_fixtures import served

CONFIG = {"method": "pixel", "steps_per_space": 30, "batch_real": 32}
ROUNDS = int(os.environ.get("HPD_BENCH_ROUNDS", "4"))

pytestmark = pytest.mark.skipif(os.environ.get("HPD_BENCH") != "1", reason="benchmark: set HPD_BENCH=1")


def headless(run_dir: Path) -> float:
    run = Run(parse_config(CONFIG), run_dir)
    controller = RunController(run)
    controller.start()
    controller.wait()
    assert run.status == "finished"
    return run.state.steps_done / run.state.elapsed_s


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


def test_page_attached_vs_headless(tmp_path):
    from playwright.sync_api import sync_playwright
    runs = tmp_path / "runs"
    with served(runs, tmp_path / "gradio") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        free, polled, firsts = [], [], []
        for k in range(ROUNDS):  # interleaved, so drifting machine load hits both sides alike
            free.append(headless(tmp_path / f"headless{k}"))
            # A fresh browser profile each round: an empty page, so the first image is this run's.
            context = browser.new_context(viewport={"width": 1400, "height": 1300})
            page = open_page(context, url)
            configure_small(page, steps=CONFIG["steps_per_space"], batch_real=CONFIG["batch_real"])
            pick(page, "method", "Pixel")
            rate, first = attached(page, runs)
            context.close()
            polled.append(rate)
            firsts.append(first)
        browser.close()
    print(f"\nconfig {CONFIG}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"headless steps/s {[round(x, 3) for x in free]} median {statistics.median(free):.3f}")
    print(f"attached steps/s {[round(x, 3) for x in polled]} median {statistics.median(polled):.3f}")
    print(f"ratio attached/headless (medians) {statistics.median(polled) / statistics.median(free):.3f}")
    print(f"Start -> first image on the page, s {[round(x, 2) for x in firsts]}")
