"""The app factory: one registry per app, the page and the named API on top of it."""
from __future__ import annotations

import atexit
from pathlib import Path

import gradio as gr

from .api import register_api
from .jobs import Components, JobRegistry
from .ui import Page

# Gradio's cache (grid PNGs sent to browsers): swept every 5 min of files older than 10 min.
DELETE_CACHE = (300, 600)


def build_app(runs_dir: str | Path = "runs", *, generator=None, classifier=None,
              data_root: str | None = None) -> gr.Blocks:
    """`generator`/`classifier`/`data_root` go to every Run (tests use tiny ones on fake data)."""
    registry = JobRegistry(Path(runs_dir), Components(generator, classifier, data_root))
    # Held to the end of the process on purpose: its runs' threads must be stopped before exit.
    atexit.register(registry.shutdown)
    with gr.Blocks(title="H-PD Studio", delete_cache=DELETE_CACHE) as demo:
        page = Page(registry)
        page.wire(demo)
        register_api(registry)
    demo.queue(default_concurrency_limit=4, max_size=256)
    return demo


def launch_app(demo: gr.Blocks, runs_dir: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
               share: bool = False, prevent_thread_lock: bool = False, quiet: bool = False):
    """Serve; downloads may come only from the runs folder. Returns (app, local_url, share_url)."""
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    return demo.launch(server_name=host, server_port=port, share=share, allowed_paths=[str(Path(runs_dir).resolve())],
                       prevent_thread_lock=prevent_thread_lock, quiet=quiet, show_error=True)
