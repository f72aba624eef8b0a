"""The page in a real browser: Debian chromium driven headless by Python Playwright."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from hpd_app.evaluation import EvalSettings
from run_fixtures import fake_root, tiny_generator, tiny_proxy
from test_app_fixtures import served

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
REPO = Path(__file__).resolve().parent.parent
REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")

def shipped_assets_load() -> bool:
    """The embedded prior and proxy are usable (they were still being trained when the studio landed)."""
    from engine import load_classifier, load_generator
    try:
        load_generator("embedded:fashion-mnist", "cpu")
        load_classifier("embedded:fashion-mnist", "cpu")
    except Exception:
        return False
    return True


pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def open_page(context, url):
    page = context.new_page()
    page.goto(url)
    page.get_by_role("button", name="Start", exact=True).wait_for()
    page.wait_for_timeout(1000)  # let demo.load hand out the owner token before we click
    return page


def set_number(page, name: str, value) -> None:
    box = page.locator(f"#cfg-{name} input")
    box.fill(str(value))
    box.press("Tab")


def pick(page, name: str, option: str) -> None:
    page.locator(f"#cfg-{name} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def configure_small(page, steps: int, batch_real: int) -> None:
    set_number(page, "steps_per_space", steps)
    page.get_by_text("More settings").click()
    set_number(page, "batch_real", batch_real)


def wait_steps(page, pred, timeout_s: float) -> list[int]:
    """The steps done of each run on screen, read from the timeline, once `pred` holds of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = [int(a) for a, _ in re.findall(r"(\d+)/(\d+) steps", page.locator("#status").inner_text())]
        if pred(done):
            return done
        assert time.monotonic() < deadline, f"steps on screen: {done}"
        page.wait_for_timeout(250)


def test_start_shows_grid_and_curve_then_reattaches(browser, tmp_path):
    root = fake_root(tmp_path / "fm")
    with served(tmp_path / "runs", tmp_path / "gradio", generator=tiny_generator(), classifier=tiny_proxy(),
                data_root=str(root), evaluation=EvalSettings(models=("convnet", "alexnet"), epochs=2)) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1300})
        page = open_page(context, url)
        # Nothing on screen: the run controls do not apply yet.
        for name in ("Pause", "Resume", "Step", "Stop", "Evaluate"):
            expect(page.get_by_role("button", name=name, exact=True)).to_be_disabled()
        # A bad config comes back as one clear line on the page.
        set_number(page, "ipc", 0)
        page.get_by_role("button", name="Start", exact=True).click()
        # ... in the form's own words, not the CLI flag's.
        expect(page.locator("#notice")).to_contain_text("Could not start: Images per class must be at least 1",
                                                        timeout=30_000)
        set_number(page, "ipc", 1)
        configure_small(page, steps=10, batch_real=8)  # 50 steps: long enough to pause it mid-way, short enough
        # to finish well inside the wait below on a loaded 2-core machine
        pick(page, "selection", "last step")
        page.get_by_role("button", name="Start", exact=True).click()
        expect(page.locator("#grid-a img")).to_be_visible(timeout=60_000)
        page.get_by_role("button", name="Pause", exact=True).click()
        expect(page.locator("#status")).to_contain_text("paused", timeout=30_000)
        expect(page.locator("#chart img, #chart svg, #chart canvas").first).to_be_visible(timeout=30_000)
        expect(page.locator("#status")).to_contain_text(re.compile(r"layer \d+ of 5"))
        run_id = re.search(r"\d{8}-\d{6}-hpd-[0-9a-f]{6}", page.locator("#status").inner_text()).group(0)
        expect(page.get_by_role("button", name="Pause", exact=True)).to_be_disabled()   # it is paused
        expect(page.get_by_role("button", name="Resume", exact=True)).to_be_enabled()
        # A refresh and a second tab reattach to the same run (BrowserState holds the token and run ids),
        # and the form shows that run's settings, read-only while it goes on.
        page.reload()
        expect(page.locator("#status")).to_contain_text(run_id, timeout=30_000)
        expect(page.locator("#cfg-steps_per_space input")).to_have_value("10", timeout=10_000)
        expect(page.locator("#cfg-steps_per_space input")).to_be_disabled()
        expect(page.get_by_role("button", name="Start", exact=True)).to_be_disabled()
        second = context.new_page()
        second.goto(url)
        expect(second.locator("#status")).to_contain_text(run_id, timeout=30_000)
        second.get_by_role("button", name="Resume", exact=True).click()
        # With two pages polling, runs here have stepped as slowly as 0.2 steps/s (session 6; not yet
        # explained, noted on issue 15): the wait covers 50 steps at that pace.
        expect(page.locator("#status")).to_contain_text("finished", timeout=300_000)
        expect(page.locator("#cfg-steps_per_space input")).to_be_enabled(timeout=10_000)  # over: free again
        for name in ("Pause", "Resume", "Step", "Stop"):
            expect(page.get_by_role("button", name=name, exact=True)).to_be_disabled()
        expect(page.get_by_role("button", name="Evaluate", exact=True)).to_be_enabled()
        assert json.loads((tmp_path / "runs" / run_id / "run.json").read_text())["config"]["selection"] == "last"
        # Another user (a fresh browser profile) sees none of it.
        stranger = open_page(browser.new_context(), url)
        expect(stranger.locator("#status")).to_contain_text("press **Start**".replace("**", ""), timeout=5_000)
        assert run_id not in stranger.locator("#status").inner_text()
        # Export offers the zip download.
        page.get_by_role("button", name="Export selected layer").click()
        expect(page.locator("#download")).to_be_enabled(timeout=30_000)
        with page.expect_download() as download:
            page.locator("#download").click()
        assert download.value.suggested_filename == f"{run_id}-layer5.zip"  # the run and its exported layer
        # Compare: H-PD and GLaD on the same settings, two grids and one chart, stepping together, then
        # evaluated (ticked) with a verdict.
        context.close()
        page = open_page(browser.new_context(viewport={"width": 1400, "height": 1300}), url)
        configure_small(page, steps=4, batch_real=8)  # 20 steps each: time to see both grow, and to finish
        page.locator("#cfg-evaluate input").check()
        page.get_by_role("button", name="Compare GLaD vs H-PD").click()
        expect(page.locator("#status")).to_contain_text("GLaD", timeout=30_000)
        expect(page.locator("#status")).to_contain_text("H-PD")
        first = wait_steps(page, lambda done: len(done) == 2 and all(d >= 1 for d in done), 90)
        grown = wait_steps(page, lambda done: len(done) == 2 and all(d > f for d, f in zip(done, first)), 30)
        assert all(g > f for g, f in zip(grown, first))  # both grew within one 30 s window
        expect(page.locator("#grid-b img")).to_be_visible(timeout=90_000)
        expect(page.locator("#scores")).to_contain_text("H-PD − GLaD", timeout=360_000)
        expect(page.locator("#scores")).to_contain_text(re.compile(r"is better|No clear winner"))
        expect(page.locator("#scores")).to_contain_text("alexnet")


@pytest.mark.skipif(not REAL_FMNIST.is_file(), reason="the real Fashion-MNIST is not installed")
def test_default_page_on_real_data_and_screenshot(browser, tmp_path, request):
    have_assets = shipped_assets_load()
    with served(tmp_path / "runs", tmp_path / "gradio") as url:
        page = open_page(browser.new_context(viewport={"width": 1400, "height": 1300}), url)
        configure_small(page, steps=4 if have_assets else 8, batch_real=16)
        if not have_assets:
            # The default H-PD run needs the shipped prior: the page says so, without a stack trace.
            page.get_by_role("button", name="Start", exact=True).click()
            expect(page.locator("#status")).to_contain_text("failed", timeout=60_000)
            expect(page.locator("#status")).to_contain_text("Error:")
            expect(page.locator("#status")).to_contain_text("fashion_mnist_")  # names the missing asset
            assert "Traceback" not in page.locator("#status").inner_text()
            pick(page, "method", "Pixel")
        page.get_by_role("button", name="Start", exact=True).click()
        expect(page.locator("#grid-a img")).to_be_visible(timeout=90_000)
        expect(page.locator("#status")).to_contain_text("finished", timeout=150_000)
        page.wait_for_timeout(3500)  # the chart redraw is throttled to 3 s
        shot = tmp_path / "screenshot.png"
        page.screenshot(path=str(shot), full_page=True)
        strip = tmp_path / "journey.png"
        if have_assets:  # the strip of the H-PD run (a Pixel run has one layer)
            expect(page.locator("#journey img")).to_be_visible(timeout=10_000)
            page.locator("#journey").screenshot(path=str(strip))
    assert shot.stat().st_size > 10_000
    if request.config.getoption("--update-screenshots"):
        shutil.copyfile(shot, REPO / "docs" / "screenshot.png")
        if strip.is_file():
            shutil.copyfile(strip, REPO / "docs" / "journey.png")


def test_pause_shows_pausing_until_the_step_in_flight_ends(browser, tmp_path):
    from test_engine_core import STEP_S, Slow
    root = fake_root(tmp_path / "fm")
    with Slow(tiny_generator(), STEP_S / 2) as G, served(tmp_path / "runs", tmp_path / "gradio", generator=G,
                                                         classifier=tiny_proxy(), data_root=str(root)) as url:
        page = open_page(browser.new_context(viewport={"width": 1400, "height": 1000}), url)
        configure_small(page, steps=1, batch_real=8)
        page.get_by_role("button", name="Start", exact=True).click()
        expect(page.locator("#status")).to_contain_text("running", timeout=60_000)
        expect(page.locator("#status")).to_contain_text("step 0/1", timeout=60_000)  # layer 1's step 0 is shown
        page.get_by_role("button", name="Pause", exact=True).click()
        expect(page.locator("#status")).to_contain_text("pausing", timeout=3_000)
        expect(page.locator("#status")).to_contain_text("paused", timeout=int(3 * STEP_S * 1000))


def test_the_journey_strip_fills_a_column_per_layer_and_a_click_selects_it(browser, tmp_path):
    root = fake_root(tmp_path / "fm")
    with served(tmp_path / "runs", tmp_path / "gradio", generator=tiny_generator(), classifier=tiny_proxy(),
                data_root=str(root)) as url:
        page = open_page(browser.new_context(viewport={"width": 1400, "height": 1000}), url)
        configure_small(page, steps=1, batch_real=8)
        page.get_by_role("button", name="Start", exact=True).click()
        expect(page.locator("#status")).to_contain_text("finished", timeout=90_000)
        strip = page.locator("#journey img")
        expect(strip).to_be_visible(timeout=10_000)
        page.wait_for_timeout(1500)  # the last poll draws the strip with all five columns
        expect(page.locator("#layer input[type='number']")).to_have_value("5")  # layers count from 1 here too
        natural = strip.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert natural[0] == 92 + 5 * 96  # the class-name column, then one column per finished layer
        box = strip.bounding_box()
        scale = box["width"] / natural[0]
        strip.click(position={"x": (92 + 1.5 * 96) * scale, "y": box["height"] / 2})  # the second column
        expect(page.locator("#status")).to_contain_text("selected layer 2 (user)", timeout=15_000)
        # The step scrubber browses every saved preview (each layer's step 0 at least), with a chart cursor.
        page.get_by_text("Step scrubber").click()
        box = page.locator("#scrub input[type='number']")
        expect(box).to_be_enabled(timeout=10_000)
        box.fill("3")
        box.press("Enter")
        expect(page.locator("#scrub-info")).to_contain_text(re.compile(r"Layer 2 of 5 \(.*\), step 0"), timeout=15_000)
        expect(page.locator("#scrub-img img")).to_be_visible()
        # The zoom redraws the images larger (a real full-size view, not the same pixels stretched).
        page.locator("#zoom").get_by_text("192 px").click()
        expect(page.locator("#journey img")).to_have_js_property("naturalWidth", 2 * 92 + 5 * 192, timeout=15_000)
        assert page.locator("#grid-a img").evaluate("img => img.naturalWidth") == 10 * 192
        # The folder list names each run by method, objective, IPC, state and date, newest first.
        page.get_by_role("button", name="Refresh list").click()
        page.locator("#folders input").click()
        expect(page.get_by_role("option").first).to_contain_text(re.compile(r"-hpd-[0-9a-f]{6} · H-PD · dm · IPC 1 · "
                                                                              r"finished · \d\d-\d\d \d\d:\d\d"))
        page.keyboard.press("Escape")
        # No label is covered: the grid's class names sit below the band Gradio's badge and icons use.
        badge = page.locator("#grid-a label, #grid-a .label, #grid-a [data-testid='block-label']").first
        grid = page.locator("#grid-a img")
        if badge.count() and badge.is_visible():
            b, g = badge.bounding_box(), grid.bounding_box()
            band = 30 * 2 * g["height"] / grid.evaluate("img => img.naturalHeight")  # zoomed 2x: a 60 px band
            assert b["y"] + b["height"] <= g["y"] + band + 2 or b["y"] >= g["y"] + g["height"]
