"""Named endpoints for gradio_client: start, status, pause, resume, step, stop, select_layer, export,
open_folder, runs. A run belongs to the `token` given at start (or, without one, to the client's session)."""
from __future__ import annotations

import functools
import json

import gradio as gr

from .jobs import JobRegistry
from .snapshot import status_json

USER_ERRORS = (ValueError, LookupError, RuntimeError)


def owner_of(token: str, request: gr.Request | None) -> str:
    if token:
        return token
    session = getattr(request, "session_hash", None)
    if not session:
        raise ValueError("pass a token: this call has no session to own the run")
    return f"session:{session}"


def user_errors(fn):
    """The caller gets the message, never a stack trace (gr.Error is shown as is)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc), print_exception=False) from None
    return wrapper


def register_api(registry: JobRegistry) -> None:
    """Call inside the Blocks context."""

    @user_errors
    def start(config: str = "{}", token: str = "", request: gr.Request = None) -> str:
        """Start a run from a JSON object of config fields (CLI flag names with underscores); returns its id."""
        return registry.start(config, owner_of(token, request))

    @user_errors
    def status(run_id: str, token: str = "", request: gr.Request = None) -> str:
        """JSON: state (queued|running|paused|finished|failed|stopped), space, step, steps_done, curves, ..."""
        job = registry.job(run_id, owner_of(token, request))
        return json.dumps(status_json(job.snapshot, registry.queue_position(job)))

    def command(name: str):
        @user_errors
        def fn(run_id: str, token: str = "", request: gr.Request = None) -> str:
            job = registry.job(run_id, owner_of(token, request))
            getattr(job, name)()
            return job.snapshot.state
        fn.__name__ = name
        fn.__doc__ = f"{name.capitalize()} the run; returns its state."
        return fn

    @user_errors
    def select_layer(run_id: str, layer: int, token: str = "", request: gr.Request = None) -> str:
        """Use this finished layer (0-based space index) as the run's final selection."""
        registry.job(run_id, owner_of(token, request)).select_layer(int(layer))
        return f"selected layer {int(layer)}"

    @user_errors
    def export(run_id: str, token: str = "", request: gr.Request = None) -> str:
        """Write the selected layer's set; returns the path of synthetic.pt (export.zip lies beside it)."""
        return str(registry.job(run_id, owner_of(token, request)).export())

    @user_errors
    def open_folder(name: str, token: str = "", request: gr.Request = None) -> str:
        """Open a run folder under the runs dir (CLI runs too) for browsing; returns its run id."""
        return registry.open_folder(name, owner_of(token, request))

    @user_errors
    def runs(token: str = "", request: gr.Request = None) -> str:
        """JSON: {"mine": your run ids, "folders": run folders under the runs dir}."""
        return json.dumps({"mine": registry.owned(owner_of(token, request)), "folders": registry.folders()})

    for fn in (start, status, command("pause"), command("resume"), command("step"), command("stop"),
               select_layer, export, open_folder, runs):
        # Polling-style calls must never wait behind one another; the run's own thread does the work.
        gr.api(fn, api_name=fn.__name__, concurrency_limit=None)
