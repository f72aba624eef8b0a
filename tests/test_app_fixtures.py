"""Shared set-up of the studio tests: a real server on a free port, torn down without hanging.
(No tests here; named test_app_* so the studio's files stay together.)"""
from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

TINY = {"steps_per_space": 3, "batch_real": 8, "distance_real_per_class": 5, "mean_ws_samples": 20,
        "preview_every": 1}


@contextmanager
def served(runs_dir: Path, temp_dir: Path, **components):
    """Launch build_app(runs_dir, **components) on a free port; yield its URL."""
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir)
    from hpd_app import build_app, launch_app
    demo = build_app(runs_dir, **components)
    _, url, _ = launch_app(demo, runs_dir, port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        if previous is not None:  # a server started inside another's block leaves the outer one's cache
            os.environ["GRADIO_TEMP_DIR"] = previous
        # The server's runs stop with it (their processes too), not at the interpreter's exit: a run left
        # stepping would slow every later test and fail once its temporary folder is gone.
        demo.hpd_registry.shutdown(timeout=10)
        # demo.close() can hang on open connections; give it a bounded time (as Gradio's own tests do).
        closer = threading.Thread(target=demo.close, daemon=True)
        closer.start()
        closer.join(5)


def status(client, run_id: str, token: str = "") -> dict:
    return json.loads(client.predict(run_id, token, api_name="/status"))


def wait_for(client, run_id: str, pred, timeout: float = 90.0, token: str = "") -> dict:
    deadline = time.monotonic() + timeout
    while True:
        s = status(client, run_id, token)
        if pred(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last status: {s}")
        time.sleep(0.2)
