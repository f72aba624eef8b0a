"""Named endpoints for gradio_client: new_token, start, compare, status, pause, resume, step, stop,
select_layer, export, evaluate, download, open_folder, runs. A run belongs to the `token` given at start (one from /new_token,
or any 16+ random characters), or, without one, to the client's session."""
from __future__ import annotations

import functools
import json

import gradio as gr

from .bundle import download_copy, download_name
from .errors import public_snapshot, user_message
from .configs import config_values
from .evaluation import evaluation_json
from .jobs import JobRegistry
from .owners import new_token, session_owner, token_owner
from .snapshot import status_json


def owner_of(token: str, request: gr.Request | None) -> str:
    """The owner id of a call: its token's (refused unless long and random enough), else its session's."""
    if token:
        return token_owner(token)
    session = getattr(request, "session_hash", None)
    if not session:
        raise ValueError("pass a token: this call has no session to own the run")
    return session_owner(session)


def user_errors(registry: JobRegistry):
    """The caller gets one sentence, never a stack trace or a server path (tracebacks go to the log)."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence
                raise gr.Error(user_message(exc, registry.runs_dir), print_exception=False) from None
        return wrapper
    return decorate


def register_api(registry: JobRegistry) -> None:
    """Call inside the Blocks context."""
    guarded = user_errors(registry)

    def new_token_() -> str:
        """A fresh owner token: pass it as `token` to every call to own and reach your runs from anywhere."""
        return new_token()
    new_token_.__name__ = "new_token"

    @guarded
    def start(config: str = "{}", token: str = "", request: gr.Request = None) -> str:
        """Start a run from a JSON object of config fields (CLI flag names with underscores); returns its id."""
        return registry.start(config, owner_of(token, request))

    @guarded
    def compare(config: str = "{}", token: str = "", request: gr.Request = None) -> str:
        """H-PD and GLaD on one config, queued as one job whose runs step in turn; JSON [hpd id, glad id].
        `"evaluate": true` in the config evaluates both once they have finished (see /status)."""
        values = dict(config_values(config))
        evaluate = values.pop("evaluate", False) is True
        return json.dumps(registry.start_together([values | {"method": m} for m in ("hpd", "glad")],
                                                  owner_of(token, request), evaluate=evaluate))

    @guarded
    def status(run_id: str, token: str = "", request: gr.Request = None) -> str:
        """JSON: state (queued|running|paused|suspended|finished|failed|stopped), space, step, curves, ...,
        and `evaluation` (null, or its state, progress and, once done, accuracies per model)."""
        owner = owner_of(token, request)
        job = registry.job(run_id, owner)
        snap = public_snapshot(job.snapshot, registry.runs_dir)
        return json.dumps(status_json(snap, registry.queue_position(job)) |
                          {"evaluation": evaluation_json(registry.evaluation(run_id, owner))})

    @guarded
    def evaluate(run_id: str, token: str = "", request: gr.Request = None) -> str:
        """Evaluate a finished run's selected layer with the server's suite (queued for the device);
        returns the evaluation's state. /status follows it."""
        return registry.evaluate(run_id, owner_of(token, request)).state

    def command(name: str):
        @guarded
        def fn(run_id: str, token: str = "", request: gr.Request = None) -> str:
            job = registry.job(run_id, owner_of(token, request))
            getattr(job, name)()
            return job.snapshot.state
        fn.__name__ = name
        fn.__doc__ = f"{name.capitalize()} the run; returns its state."
        return fn

    @guarded
    def select_layer(run_id: str, layer: int, token: str = "", request: gr.Request = None) -> str:
        """Use this finished layer (0-based space index) as the run's final selection."""
        registry.job(run_id, owner_of(token, request)).select_layer(int(layer))
        return f"selected layer {int(layer)}"

    @guarded
    def export(run_id: str, token: str = "", request: gr.Request = None) -> str:
        """Write the selected layer's set; returns the server path of its synthetic.pt (export.zip lies
        beside it; /download sends that zip)."""
        return str(registry.job(run_id, owner_of(token, request)).export())

    @guarded
    def open_folder(name: str, token: str = "", request: gr.Request = None) -> str:
        """Open a run folder under the runs dir (yours, or a CLI run's) for browsing; returns its run id."""
        return registry.open_folder(name, owner_of(token, request))

    @guarded
    def runs(token: str = "", request: gr.Request = None) -> str:
        """JSON: {"mine": your run ids, "folders": the run folders you may open (yours and the CLI's)}."""
        owner = owner_of(token, request)
        return json.dumps({"mine": registry.owned(owner), "folders": registry.folders(owner)})

    for fn in (new_token_, start, compare, status, command("pause"), command("resume"), command("step"),
               command("stop"), select_layer, export, evaluate, open_folder, runs):
        # Polling-style calls must never wait behind one another; the run's own thread does the work.
        gr.api(fn, api_name=fn.__name__, concurrency_limit=None)

    # The zip is a file: it goes through a component so that Gradio hands out a copy in its cache (the
    # runs folder itself is never served). Hidden, it only exists for the API.
    @guarded
    def download(run_id: str, token: str = "", request: gr.Request = None) -> str:
        """The run's last export as a zip: a copy made for this request."""
        job = registry.job(run_id, owner_of(token, request))
        name = download_name(job.run_dir.name, job.snapshot.exported_space)
        return str(download_copy(job.bundle(), zip_file.GRADIO_CACHE, name))  # this app's cache: served as is

    with gr.Column(visible=False):
        run_box, token_box, zip_file = gr.Textbox(label="run_id"), gr.Textbox(label="token"), gr.File(label="zip")
        trigger = gr.Button("download")
    trigger.click(download, [run_box, token_box], [zip_file], api_name="download", concurrency_limit=None)
