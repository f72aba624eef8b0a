"""The app factory: one registry per app, the page and the named API on top of it."""
from __future__ import annotations

import atexit
from pathlib import Path

import gradio as gr

from .api import register_api
from .evaluation import EvalSettings
from .jobs import Components, JobRegistry, ServerLimits
from .ui import Page

# Gradio's cache (grid PNGs and download copies sent to browsers): swept every 5 min of files older than 10 min.
DELETE_CACHE = (300, 600)
MAX_UPLOAD = "1mb"  # the page uploads nothing; this bounds what anyone can post to Gradio's upload route
QUEUE_SIZE = 256    # requests waiting in Gradio's own queue, all users together
# Gradio's queue wakes every 1 ms while it has nothing to do and its progress loop every 10 ms
# (Queue.sleep_when_free, progress_update_sleep_when_free on Linux): 6-7% of a core on an idle server here,
# taken from the runs it serves, every wake-up taking the GIL from their threads. 20 ms delays a request by
# at most that and 100 ms a progress message, unseen beside the page's 0.5 s poll
# (bench/bench_idle_queue.py, BENCHMARKS.md "Studio").
IDLE_WAKE_S = 0.02
PROGRESS_WAKE_S = 0.1


def build_app(runs_dir: str | Path = "runs", *, generator=None, classifier=None, data_root: str | None = None,
              limits: ServerLimits = ServerLimits(), listeners: tuple = (),
              evaluation: EvalSettings = EvalSettings()) -> gr.Blocks:
    """`generator`/`classifier`/`data_root`/`listeners` go to every Run (tests use tiny ones on fake data)."""
    registry = JobRegistry(Path(runs_dir), Components(generator, classifier, data_root, tuple(listeners)),
                           limits=limits, evaluation=evaluation)
    # Held to the end of the process on purpose: its runs' threads must be stopped before exit.
    atexit.register(registry.shutdown)
    with gr.Blocks(title="H-PD Studio", delete_cache=DELETE_CACHE) as demo:
        page = Page(registry)
        page.wire(demo)
        register_api(registry)
    demo.queue(default_concurrency_limit=4, max_size=QUEUE_SIZE)
    quiet_idle_queue(demo)
    demo.hpd_registry = registry  # for tests and embedding apps
    return demo


def quiet_idle_queue(demo: gr.Blocks, wake_s: float = IDLE_WAKE_S, progress_s: float = PROGRESS_WAKE_S) -> None:
    """Make Gradio's idle queue loops wake every `wake_s` / `progress_s` seconds instead of every 1 / 10 ms.
    The attributes are Gradio's own (6.x), not public API: a version without them is left as it is, and
    tests/test_app_api.py fails so that someone looks."""
    queue = getattr(demo, "_queue", None)
    for name, floor in (("sleep_when_free", wake_s), ("progress_update_sleep_when_free", progress_s)):
        if queue is not None and hasattr(queue, name):
            setattr(queue, name, max(getattr(queue, name), floor))


def launch_app(demo: gr.Blocks, runs_dir: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
               share: bool = False, prevent_thread_lock: bool = False, quiet: bool = False,
               max_file_size: str | int = MAX_UPLOAD):
    """Serve. Nothing under the runs folder is served by URL (it is blocked, not allowed): downloads are
    per-request copies in Gradio's cache. Returns (app, local_url, share_url)."""
    runs = Path(runs_dir).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    cache = Path(demo.GRADIO_CACHE).resolve()
    if runs == cache or cache in runs.parents or runs in cache.parents:
        raise ValueError(f"the runs folder {runs} and Gradio's cache {cache} (served to anyone who has a "
                         "file's name) must not contain one another; choose another --runs-dir or GRADIO_TEMP_DIR")
    # Errors reach users as the one sentence of a gr.Error; anything else shows as a bare "Error".
    return demo.launch(server_name=host, server_port=port, share=share, blocked_paths=[str(runs)],
                       max_file_size=max_file_size, prevent_thread_lock=prevent_thread_lock, quiet=quiet,
                       show_error=False)
