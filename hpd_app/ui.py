"""The page: layout first, then handlers that read snapshots and send commands, then flat wiring.

UI state holds ids and drawn versions only (BrowserState: the owner token and the runs on screen, so a
refresh or a second tab reattaches); jobs live in the registry. Handlers return dicts keyed by component
and gr.skip() what did not change.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict

import gradio as gr

from engine import METHODS, OBJECTIVES, SELECTIONS, RunConfig, get_objective, list_datasets, resolve_device

from . import browse, render
from .bundle import download_copy, download_name
from .errors import public_snapshot, user_message
from .evaluation import table as evaluation_table
from .images import write_once
from .jobs import JobRegistry
from .owners import new_token, token_owner, token_problem
from .previews import open_preview
from .snapshot import LABELS, TERMINAL

POLL_S = 0.5
CAM_CACHE = 256       # strip columns of CAM overlays kept (10 small images each)
CHART_EVERY_S = 3.0   # the chart is re-drawn at most this often (~40 ms to draw, more to encode, under the GIL)
# At short budgets "last" can beat the distance by far (RESULTS.md, IPC 10), so the page offers the basis.
SELECTION_LABELS = {"distance": "class-relevant distance", "loss": "loss value", "last": "last step"}


ZOOMS = (96, 192, 288)  # px per image the page offers


def _channel(targets: list, updates: dict) -> dict:
    """`updates` (component -> value) as a State's value: positions in `targets`, since a State holds data,
    not components. A new stamp every time, so that equal updates after a reset still change it (and fire)."""
    index = {id(c): i for i, c in enumerate(targets)}
    return {"stamp": time.monotonic_ns(), "updates": {index[id(c)]: u for c, u in updates.items()}}


def _unpack(targets: list, channel: dict | None) -> dict:
    if not channel:
        return {}
    return {targets[i]: update for i, update in channel["updates"].items()}


def _cell(zoom) -> int:
    """The zoom a request asked for, if the page offers it: a crafted value must not size a picture."""
    try:
        return int(zoom) if int(zoom) in ZOOMS else render.CELL
    except (TypeError, ValueError):
        return render.CELL


def _devices() -> tuple[list[str], str]:
    default = str(resolve_device(None))
    return (["cpu", "cuda"] if default != "cpu" else ["cpu"]), default


class Page:
    """Components of the page; built inside a Blocks context."""

    def __init__(self, registry: JobRegistry):
        self.registry = registry
        self._cam_cache: dict[tuple[str, int], list] = {}  # (run id, layer) -> the strip's CAM overlays
        devices, default_device = _devices()
        self.browser = gr.BrowserState({"token": "", "watch": []}, storage_key="hpd-studio")
        self.watch = gr.State([])
        self.seen = gr.State({})
        # The poll's rare updates (the form's lock and values, the buttons' states), applied by their own
        # handler when this changes: every output a handler lists costs Gradio a component's construction
        # per call even when skipped, and these ~30 outputs change only when a run's state does.
        self.pending = gr.State(None)
        # Likewise the layer panels, the evaluation table and the distance-vs-accuracy chart, which change
        # when a layer ends or an evaluation lands, not at every poll.
        self.panels = gr.State(None)
        self.cursor = gr.State(None)  # the scrubbed step's x on the chart, None: no cursor
        gr.Markdown("# H-PD Studio\nWatch Hierarchical Parameterization Distillation optimise synthetic images "
                    "inside a GAN, layer by layer, keeping per layer the latent with the smallest class-relevant "
                    "CAM distance.")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                self.form = {
                    "dataset": gr.Dropdown(list_datasets(), value="fashion-mnist", label="Dataset"),
                    "method": gr.Dropdown([(LABELS[m], m) for m in METHODS], value="hpd", label="Method"),
                    "objective": gr.Dropdown([(get_objective(n).label, n) for n in OBJECTIVES], value="dm",
                                             label="Objective"),
                    "generator": gr.Textbox("", label="Generator",
                                            placeholder="empty: the dataset's embedded prior; or a StyleGAN-XL .pkl"),
                    "ipc": gr.Number(1, label="Images per class", precision=0),  # the engine validates (one message)
                    "steps_per_space": gr.Number(0, label="Steps per layer (0: the paper's, " + ", ".join(
                        f"{n} {get_objective(n).steps_per_space}" for n in OBJECTIVES) + ")", precision=0),
                    "lr_w": gr.Number(0, label="Learning rate of W+ (0: the default)"),
                    "lr_f": gr.Number(0, label="Learning rate of f / pixels (0: the default)"),
                    "seed": gr.Number(0, label="Seed", precision=0),
                    "device": gr.Dropdown(devices, value=default_device, label="Device"),
                }
                with gr.Accordion("More settings", open=False):
                    self.form["batch_real"] = gr.Number(256, label="Real images per class per step", precision=0)
                    self.form["accuracy_pick"] = gr.Checkbox(False, label="Evaluate each layer on held-out data")
                    self.form["selection"] = gr.Dropdown(
                        [("default: distance for H-PD, last step otherwise", "")]  # "": the engine's default
                        + [(SELECTION_LABELS[s], s) for s in SELECTIONS], value="", label="Latent kept per layer")
                    self.form["processes"] = gr.Number(1, label="Processes (torchrun)", precision=0)
                    self.form["evaluate"] = gr.Checkbox(
                        False, label="Evaluate when finished (every network that takes the images; the Compare verdict)")
                for name, comp in self.form.items():
                    comp.elem_id = f"cfg-{name}"  # stable hooks for browser tests and user CSS
                with gr.Row():
                    self.start_btn = gr.Button("Start", variant="primary", elem_id="start")
                    self.compare_btn = gr.Button("Compare GLaD vs H-PD", elem_id="compare")
                # Refusals stay here until the next Start/Open (the timeline beside it is redrawn every tick).
                self.notice = gr.Markdown("", elem_id="notice")
                self.new_btn = gr.Button("New run (leave the run on screen going)", size="sm", elem_id="new-run",
                                         visible=False)
                self.runs = gr.Dropdown([], label="Your runs", elem_id="runs")
                self.folders = gr.Dropdown([], label="Run folders on disk", elem_id="folders")
                with gr.Row():
                    self.open_btn = gr.Button("Open run folder", size="sm")
                    self.refresh_btn = gr.Button("Refresh list", size="sm")
            with gr.Column(scale=3):
                self.status = gr.Markdown("Set up a run and press **Start**.", elem_id="status")
                with gr.Row():
                    # Disabled until a run on screen makes them apply (on_poll's _controls).
                    self.pause_btn = gr.Button("Pause", size="sm", interactive=False)
                    self.resume_btn = gr.Button("Resume", size="sm", interactive=False)
                    self.step_btn = gr.Button("Step", size="sm", interactive=False)
                    self.stop_btn = gr.Button("Stop", size="sm", variant="stop", interactive=False)
                    self.zoom = gr.Radio([(f"{z} px", z) for z in ZOOMS], value=render.CELL,
                                         label="Image size (zoom)", elem_id="zoom")
                    self.show_cam = gr.Checkbox(False, label="Show CAM heatmaps (grid and strip)", elem_id="show-cam")
                with gr.Column():  # stacked, not side by side: each grid keeps the column's full width
                    self.grid_a = gr.Image(None, label="Synthetic images", type="pil", format="png",
                                           interactive=False, elem_id="grid-a")
                    self.grid_b = gr.Image(None, label="Compared run", type="pil", format="png",
                                           interactive=False, visible=False, elem_id="grid-b")
                self.chart = gr.Plot(label="Distance and loss", format="png", elem_id="chart")
                self.scores = gr.Markdown("", elem_id="scores")  # the evaluation: beside what it judges
                with gr.Row():  # only with "Evaluate each layer on held-out data"
                    self.dist_acc = gr.Plot(label="Held-out accuracy vs kept distance, per layer", format="png",
                                            visible=False, elem_id="dist-acc")
                    self.dist_acc_info = gr.Markdown("", elem_id="dist-acc-info")
                with gr.Accordion("Step scrubber: every saved preview, step by step", open=False):
                    self.scrub = gr.Slider(1, 2, value=1, step=1, label="Saved preview (1 = the first layer's step 0)",
                                           interactive=False, elem_id="scrub")
                    self.scrub_info = gr.Markdown("", elem_id="scrub-info")
                    self.scrub_img = gr.Image(None, label="The synthetic images at that step", type="pil",
                                              format="png", interactive=False, elem_id="scrub-img")
                with gr.Accordion("Morphological transition: the kept images of each finished layer", open=True):
                    self.journey_diff = gr.Checkbox(False, label="Show what each layer changed (|layer k - layer k-1|, x4)",
                                                    elem_id="journey-diff")
                    self.journey = gr.Image(None, label="Journey: a column per finished layer; click one to use it",
                                            type="pil", format="png", interactive=False, elem_id="journey")
                    self.layer = gr.Slider(1, 2, value=1, step=1, label="Layer (finished ones; 1 = the first)",
                                           interactive=False,
                                           elem_id="layer")
                    with gr.Column():  # stacked: each at the column's full width
                        self.layer_img = gr.Image(None, label="Kept images", type="pil", format="png",
                                                  interactive=False)
                        self.layer_cam = gr.Image(None, label="Their CAM", type="pil", format="png",
                                                  interactive=False)
                    self.layer_info = gr.Markdown("")
                    self.use_layer_btn = gr.Button("Use this layer", size="sm", interactive=False)
                with gr.Row():
                    self.export_btn = gr.Button("Export selected layer", elem_id="export", interactive=False)
                    self.download = gr.DownloadButton("Download zip", interactive=False, elem_id="download")
                    self.eval_btn = gr.Button("Evaluate", elem_id="evaluate", interactive=False)
                self.export_info = gr.Markdown("")
        self.timer = gr.Timer(POLL_S)

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _owner(browser: dict) -> str:
        """The page's owner id: from the token the server issued at load (refused if it was tampered with)."""
        return token_owner((browser or {}).get("token", ""))

    def _message(self, exc: Exception) -> str:
        return user_message(exc, self.registry.runs_dir)

    def _form_message(self, exc: Exception) -> str:
        """The engine names fields as CLI flags (--ipc); the page says them as its own labels do."""
        text = self._message(exc)
        for name, comp in sorted(self.form.items(), key=lambda item: -len(item[0])):
            label = str(comp.label).split(" (")[0]
            # The flag anywhere; the bare field name only where a message starts with it ("ipc must be ...").
            text = re.sub(rf"(?<![\w-])--{name.replace('_', '-')}(?![\w-])|^{name}(?![\w-])", label, text)
        return text[:1].upper() + text[1:]

    def _jobs(self, browser: dict, watch: list[str]) -> list:
        try:
            owner = self._owner(browser)
        except ValueError:
            return []
        out = []
        for run_id in watch or []:
            try:
                out.append(self.registry.job(run_id, owner))
            except LookupError:
                continue
        return out

    def _cam_grid(self, job, key, snap, cell: int = render.CELL):
        entry = job.cam_input(key)
        if entry is None:
            return None, "no images yet"
        try:
            return render.grid(self.registry.cams.overlays(*entry), snap.class_names, snap.ipc, cell), ""
        except ValueError as exc:
            return None, f"CAM unavailable: {exc}"

    def _grid(self, job, show_cam: bool, cell: int = render.CELL):
        snap = job.snapshot
        if snap.preview is None:
            return None, ""
        if show_cam:
            image, note = self._cam_grid(job, "preview", snap, cell)
            if image is not None:
                return image, ""
            return render.grid(snap.preview, snap.class_names, snap.ipc, cell), note
        return render.grid(snap.preview, snap.class_names, snap.ipc, cell), ""

    def _run_label(self, run_id: str, owner: str) -> str:
        """"<id> · H-PD · finished · evaluated", as the folder list labels folders."""
        job = self.registry.job(run_id, owner)
        evaluated = self.registry.evaluation(run_id, owner)
        tail = [] if evaluated is None or evaluated.state != "done" else ["evaluated"]
        return " · ".join([run_id, job.snapshot.label, job.snapshot.state] + tail)

    def _runs_update(self, browser: dict, value: str | None = None):
        owner = self._owner(browser)
        choices = []
        for run_id in self.registry.owned(owner):
            try:
                choices.append((self._run_label(run_id, owner), run_id))
            except LookupError:
                continue
        return gr.Dropdown(choices=choices, value=value)

    def _panels(self) -> list:
        """What shows one run's layers and steps: cleared when another run comes on screen."""
        return [self.layer, self.layer_img, self.layer_cam, self.layer_info, self.journey, self.scrub,
                self.scrub_img, self.scrub_info, self.cursor]

    def _cleared(self) -> dict:
        return {self.layer: gr.Slider(minimum=1, maximum=2, value=1, interactive=False), self.layer_img: None,
                self.layer_cam: None, self.layer_info: "", self.journey: None,
                self.scrub: gr.Slider(minimum=1, maximum=2, value=1, interactive=False), self.scrub_img: None,
                self.scrub_info: "", self.cursor: None}

    # Unset fields are shown as the form's own "default" values (the engine resolves them at start).
    _FORM_UNSET = {"generator": "", "steps_per_space": 0, "lr_w": 0, "lr_f": 0, "selection": ""}

    def _form_of(self, job) -> dict:
        """{component: value} of the settings `job` was started with (fields it does not record: left out)."""
        if isinstance(getattr(job, "config", None), RunConfig):
            config = asdict(job.config)
        else:
            config = browse.read_meta(job.run_dir).get("config") or {}
        config = config | {"processes": getattr(job, "processes", 1)}
        out = {}
        for name, comp in self.form.items():
            if name in config:
                value = config[name]
                out[comp] = self._FORM_UNSET.get(name, value) if value is None else value
        return out

    def _form_lock(self, locked: bool, values: dict | None = None) -> dict:
        """While the run on screen goes on, the form shows its settings read-only (New run frees it);
        `values` {component: value} are shown in it."""
        values = values or {}
        return {c: gr.update(interactive=not locked, **({"value": values[c]} if c in values else {}))
                for c in [*self.form.values(), self.start_btn, self.compare_btn]} | {self.new_btn: gr.update(visible=locked)}

    def _controls(self, snaps: list) -> dict:
        """Buttons enabled only when they apply to the runs on screen."""
        states = [s.state for s in snaps]
        live = [s for s in snaps if s.source == "live"]
        computed = [s for s in snaps if s.source in ("live", "process")]  # Stop ends torchrun runs too
        first_done = bool(snaps and snaps[0].spaces)
        return {
            self.pause_btn: gr.update(interactive=any(s.state in ("queued", "running") for s in live)),
            self.resume_btn: gr.update(interactive=any(s.state in ("paused", "pausing", "suspended") for s in live)),
            self.step_btn: gr.update(interactive=any(s.state == "paused" for s in live)),
            self.stop_btn: gr.update(interactive=any(s.state not in TERMINAL and s.state != "stopping"
                                                     for s in computed)),
            self.export_btn: gr.update(interactive=first_done),
            self.use_layer_btn: gr.update(interactive=first_done),
            self.eval_btn: gr.update(interactive=any(st in TERMINAL for st in states) and first_done),
        }

    def _folders_update(self, browser: dict):
        """Newest first, each with its method, objective, IPC, state and date."""
        names = self.registry.folders(self._owner(browser))
        return gr.Dropdown(choices=[(browse.folder_label(self.registry.runs_dir, n), n) for n in names])

    # ------------------------------------------------------------ handlers
    def on_load(self, browser: dict) -> dict:
        """The server issues the page's owner token (kept in the browser); a stored one that is not a
        token the server could have issued is replaced."""
        browser = dict(browser or {})
        token = browser.get("token")
        if not isinstance(token, str) or token_problem(token) is not None:
            browser["token"], browser["watch"] = new_token(), []
        watch = [j.run_id for j in self._jobs(browser, browser.get("watch", []))]
        browser["watch"] = watch
        return {self.browser: browser, self.watch: watch, self.seen: {},
                self.runs: self._runs_update(browser, watch[0] if watch else None),
                self.folders: self._folders_update(browser)}

    def _form_values(self, data: dict) -> dict:
        values = {name: data[comp] for name, comp in self.form.items()}
        values.pop("evaluate", None)  # the page's, not the run's: _start_runs reads it
        if values.get("processes") is None:
            raise ValueError("Processes must be a whole number")
        values["processes"] = int(values["processes"])
        if values.get("seed") is None:  # a Number box holding text gives None: never a silent default seed
            raise ValueError("Seed must be a whole number")
        # Empty generator and 0 steps / learning rates mean "the paper's default" (a Number cannot be empty).
        for name in ("generator", "steps_per_space", "lr_w", "lr_f"):
            if not values[name]:
                values.pop(name)
        return values

    def _start_runs(self, data: dict, methods: list[str | None]) -> dict:
        browser = dict(data[self.browser] or {})
        try:
            values = self._form_values(data)
            # A comparison is both runs or none, queued as one job whose runs step in turn.
            ids = self.registry.start_together([values | ({"method": m} if m else {}) for m in methods],
                                               self._owner(browser), evaluate=bool(data[self.form["evaluate"]]))
        except Exception as exc:  # noqa: BLE001 - one sentence on the page
            return {self.notice: f"**Could not start:** {self._form_message(exc)}", self.browser: browser}
        browser["watch"] = ids
        return self._cleared() | {self.browser: browser, self.watch: ids, self.seen: {}, self.status: "Starting…",
                self.notice: "",
                self.runs: self._runs_update(browser, ids[0]), self.grid_a: None,
                self.grid_b: gr.Image(None, visible=len(ids) > 1),
                self.download: gr.DownloadButton(interactive=False), self.export_info: "", self.scores: ""}

    def on_start(self, data: dict) -> dict:
        return self._start_runs(data, [None])

    def on_compare(self, data: dict) -> dict:
        """H-PD and GLaD on the same data, seed and budget (GLaD's default steps = H-PD's total)."""
        return self._start_runs(data, ["hpd", "glad"])

    def on_pick_run(self, browser: dict, run_id: str | None) -> dict:
        if not run_id:
            return {self.watch: gr.skip()}
        browser = dict(browser) | {"watch": [run_id]}
        return self._cleared() | {self.browser: browser, self.watch: [run_id], self.seen: {},
                                  self.grid_b: gr.Image(None, visible=False)}

    def on_open_folder(self, browser: dict, name: str | None) -> dict:
        if not name:
            return {self.notice: "Pick a run folder first."}
        try:
            run_id = self.registry.open_folder(name, self._owner(browser))
        except Exception as exc:  # noqa: BLE001 - one sentence on the page
            return {self.notice: f"**Could not open:** {self._message(exc)}"}
        browser = dict(browser) | {"watch": [run_id]}
        return self._cleared() | {self.browser: browser, self.watch: [run_id], self.seen: {}, self.notice: "",
                                  self.runs: self._runs_update(browser, run_id), self.grid_b: gr.Image(None, visible=False)}

    def on_refresh(self, browser: dict) -> dict:
        try:
            return {self.folders: self._folders_update(browser)}
        except ValueError:
            return {self.folders: gr.skip()}

    def command(self, name: str):
        def handler(browser: dict, watch: list[str]) -> dict:
            notes = []
            for job in self._jobs(browser, watch):
                try:
                    getattr(job, name)()
                except Exception as exc:  # noqa: BLE001 - one sentence on the page
                    notes.append(self._message(exc))
            return {self.export_info: "\n\n".join(notes)}
        handler.__name__ = f"on_{name}"  # distinct from the public API names
        return handler

    def on_poll(self, browser: dict, watch: list[str], seen: dict, show_cam: bool, diffs: bool,
                cursor: int | None = None, zoom: int = render.CELL) -> dict:
        """Each panel is redrawn only when what it shows changed (its signature in `seen`)."""
        jobs = self._jobs(browser, watch)
        out: dict = {c: gr.skip() for c in (self.status, self.grid_a, self.grid_b, self.chart, self.journey,
                                             self.scrub)}
        if not jobs:
            return out | {self.seen: gr.skip()}
        seen = dict(seen)
        snaps = [public_snapshot(j.snapshot, self.registry.runs_dir) for j in jobs]
        cell = _cell(zoom)
        self._poll_state(out, seen, jobs, snaps)
        self._poll_watch(out, seen, jobs, snaps, bool(show_cam), cursor, cell)
        panels: dict = {}
        self._poll_layers(panels, seen, browser, watch, jobs, snaps, cell)
        if panels:
            out[self.panels] = _channel(self._panel_outputs(), panels)
        self._poll_strip(out, seen, jobs[0], snaps[0], bool(diffs), bool(show_cam), cell)
        out[self.seen] = seen
        return out

    def _changed(self, seen: dict, key: str, sig) -> bool:
        if seen.get(key) == sig:
            return False
        seen[key] = sig
        return True

    def _poll_state(self, out: dict, seen: dict, jobs: list, snaps: list) -> None:
        """The buttons that apply, and the form: the run's settings, read-only while it goes on; sent through
        `pending` (on_pending applies them), and only when they changed."""
        updates = {}
        controls = self._controls(snaps)
        if self._changed(seen, "controls", [[u.get("interactive") for u in controls.values()]]):
            updates |= controls
        active = any(s.state not in TERMINAL for s in snaps)
        fresh = (seen.get("form") or [None])[0] != snaps[0].run_id
        if self._changed(seen, "form", [snaps[0].run_id, active]):
            updates |= self._form_lock(active, self._form_of(jobs[0]) if fresh else None)
        if updates:
            out[self.pending] = _channel(self._rare(), updates)

    def on_pending(self, pending: dict | None) -> dict:
        return _unpack(self._rare(), pending)

    def on_panels(self, panels: dict | None) -> dict:
        return _unpack(self._panel_outputs(), panels)

    def _poll_watch(self, out: dict, seen: dict, jobs: list, snaps: list, show_cam: bool, cursor, cell: int) -> None:
        """The grids, the timeline, the chart and the scrubber's range."""
        notes = []
        for job, comp, key in zip(jobs, (self.grid_a, self.grid_b), ("a", "b")):
            sig = [job.run_id, job.snapshot.preview_version, show_cam, cell]
            if seen.get(key) != sig:
                image, seen[f"{key}_note"] = self._grid(job, show_cam, cell)
                image = write_once(image, comp.GRADIO_CACHE)
                if image is not None:
                    # A bare value unless the label changes: Gradio turns every update, even gr.update(value=...),
                    # into a new component whose config (its pydantic schema) it rebuilds under the GIL, which
                    # the run thread then waits for (BENCHMARKS.md, "Studio, session 10"). A new gr.Image would
                    # also encode the picture as WebP here; the page's own is PNG.
                    label = f"{job.snapshot.label}: synthetic images"
                    out[comp] = image if not self._changed(seen, f"{key}_label", label) else \
                        gr.update(value=image, label=label, visible=True)
                    seen[key] = sig
            notes.append(seen.get(f"{key}_note", ""))
        text = "\n\n---\n\n".join(render.timeline(s, self.registry.queue_position(j)) for s, j in zip(snaps, jobs))
        text += "".join(f"\n\n{n}" for n in notes if n)
        if self._changed(seen, "status", text):
            out[self.status] = text
        chart_sig = [[s.run_id, len(s.curve), len(s.spaces)] for s in snaps] + [cursor]
        if seen.get("chart") != chart_sig and time.monotonic() - seen.get("chart_t", 0.0) >= CHART_EVERY_S:
            out[self.chart], seen["chart"] = render.chart(snaps, cursor), chart_sig
            seen["chart_t"] = time.monotonic()
        # The scrubber's range is a property (a rebuilt component, see above): widened at most every
        # CHART_EVERY_S while previews arrive, at once for a new run or one that has ended.
        scrub_sig = [snaps[0].run_id, len(snaps[0].previews)]
        settled = snaps[0].state in TERMINAL or (seen.get("scrub") or [None])[0] != snaps[0].run_id
        if snaps[0].previews and seen.get("scrub") != scrub_sig and (
                settled or time.monotonic() - seen.get("scrub_t", 0.0) >= CHART_EVERY_S):
            out[self.scrub] = gr.Slider(minimum=1, maximum=max(2, len(snaps[0].previews)), interactive=True)
            seen["scrub"], seen["scrub_t"] = scrub_sig, time.monotonic()

    def _poll_layers(self, out: dict, seen: dict, browser: dict, watch: list, jobs: list, snaps: list,
                     cell: int) -> None:
        """The layer slider and panels, the evaluation table, the distance-vs-accuracy chart."""
        finished = [v.index for v in snaps[0].spaces]
        if finished and self._changed(seen, "layer", [snaps[0].run_id, finished]):
            # People count layers from 1 (the captions, the timeline, the strip); the API's spaces from 0.
            out[self.layer] = gr.Slider(minimum=1, maximum=max(2, finished[-1] + 1), value=finished[-1] + 1,
                                        interactive=True)
            out |= self.on_show_layer(browser, watch[:1], finished[-1] + 1, cell)
        scores = self._scores(browser, jobs)
        if self._changed(seen, "scores", scores):
            out[self.scores] = scores
        if self._changed(seen, "dist_acc", [snaps[0].run_id, [(v.index, v.accuracy) for v in snaps[0].spaces]]):
            fig, line = render.distance_vs_accuracy(snaps[0])
            out[self.dist_acc], out[self.dist_acc_info] = gr.Plot(fig, visible=fig is not None), line

    def _poll_strip(self, out: dict, seen: dict, job, snap, diffs: bool, show_cam: bool, cell: int) -> None:
        live = snap.state not in TERMINAL
        sig = [snap.run_id, [v.index for v in snap.spaces], snap.selected_space, diffs, show_cam,
               snap.preview_version if live else None, cell]
        if self._changed(seen, "journey", sig):
            overlays = self._strip_cams(job) if show_cam and not diffs else None
            out[self.journey] = write_once(render.journey(job.snapshot, diffs, overlays, cell), self.journey.GRADIO_CACHE)

    def on_evaluate(self, browser: dict, watch: list[str]) -> dict:
        """Evaluate every run on screen (both runs of a comparison): each queued for the device in turn."""
        jobs = self._jobs(browser, watch)
        if not jobs:
            return {self.export_info: "No run on screen."}
        notes = []
        for job in jobs:
            try:
                self.registry.evaluate(job.run_id, self._owner(browser))
            except Exception as exc:  # noqa: BLE001 - one sentence on the page
                notes.append(f"**Could not evaluate {job.snapshot.label}:** {self._message(exc)}")
        return {self.export_info: "\n\n".join(notes)}

    def _scores(self, browser: dict, jobs: list) -> str:
        owner = self._owner(browser)
        entries = []
        for job in jobs:
            try:
                entries.append((job.snapshot.label, self.registry.evaluation(job.run_id, owner)))
            except LookupError:
                continue
        if all(status is None for _, status in entries):
            return ""  # nothing evaluated or asked for: no panel
        return evaluation_table(entries)

    def _strip_cams(self, job) -> dict:
        """{space: CAM overlays} of the finished layers, each computed once per run and layer."""
        out = {}
        for view in job.snapshot.spaces:
            key = (job.run_id, view.index)
            if key not in self._cam_cache:
                entry = job.cam_input(view.index)
                if entry is None:
                    continue
                try:
                    self._cam_cache[key] = self.registry.cams.overlays(*entry)
                except ValueError:
                    return {}  # no proxy for CAMs: the strip shows the images (the grid says why)
                while len(self._cam_cache) > CAM_CACHE:
                    self._cam_cache.pop(next(iter(self._cam_cache)))
            out[view.index] = self._cam_cache[key]
        return out

    def on_new_run(self, browser: dict) -> dict:
        """Leave the run on screen (it goes on; "Your runs" brings it back) and free the form."""
        browser = dict(browser) | {"watch": []}
        return self._cleared() | self._form_lock(False) | self._controls([]) | {
            self.browser: browser, self.watch: [], self.seen: {}, self.status: "Set up a run and press **Start**.",
            self.grid_a: None, self.grid_b: gr.Image(None, visible=False), self.scores: "", self.export_info: ""}

    def on_scrub(self, browser: dict, watch: list[str], index: float, zoom: int = render.CELL) -> dict:
        """`index` as the scrubber shows it, 1-based over the run's saved previews."""
        jobs = self._jobs(browser, watch)
        none = {self.scrub_img: gr.skip(), self.scrub_info: gr.skip(), self.cursor: gr.skip(), self.chart: gr.skip()}
        if not jobs:
            return none
        job, snap = jobs[0], jobs[0].snapshot
        if not snap.previews:
            return none | {self.scrub_info: "No preview saved yet."}
        x, space, step, path = snap.previews[min(max(int(index), 1), len(snap.previews)) - 1]
        try:
            image = render.grid(render.preview_tiles(open_preview(job.run_dir, path), len(snap.class_names),
                                                     snap.ipc), snap.class_names, snap.ipc, _cell(zoom))
        except Exception as exc:  # noqa: BLE001 - a damaged or hostile file gets one sentence, not a trace
            return none | {self.scrub_info: f"Could not show this preview: {self._message(exc)}"}
        point = next((p for p in snap.curve if (p.space, p.step) == (space, step)), None)
        dist = "" if point is None or point.distance is None else f", distance {point.distance:.4f}"
        layer = snap.layers[space] if space < len(snap.layers) else str(space)
        snaps = [public_snapshot(j.snapshot, self.registry.runs_dir) for j in jobs]
        return {self.scrub_img: write_once(image, self.scrub_img.GRADIO_CACHE), self.cursor: x,
                self.chart: render.chart(snaps, x),
                self.scrub_info: f"Layer {space + 1} of {len(snap.layers)} ({layer}), step {step}{dist}."}

    def on_pick_column(self, browser: dict, watch: list[str], zoom: int, evt: gr.SelectData) -> dict:
        """A click on the journey strip: its column's layer becomes the selection (as "Use this layer")."""
        jobs = self._jobs(browser, watch)
        if not jobs or not isinstance(evt.index, (list, tuple)):
            return {self.layer_info: gr.skip()}
        space = render.journey_column(jobs[0].snapshot, int(evt.index[0]), _cell(zoom))
        if space is None:
            return {self.layer_info: "Click on a layer's column to use it."}
        return self.on_use_layer(browser, watch, space + 1)

    def on_show_layer(self, browser: dict, watch: list[str], layer: float, zoom: int = render.CELL) -> dict:
        """`layer` as the slider shows it, 1-based."""
        jobs = self._jobs(browser, watch)
        if not jobs:
            return {self.layer_img: gr.skip(), self.layer_cam: gr.skip(), self.layer_info: gr.skip()}
        job, k = jobs[0], int(layer) - 1
        snap = job.snapshot
        view = next((v for v in snap.spaces if v.index == k), None)
        if view is None or view.images is None:
            return {self.layer_img: None, self.layer_cam: None, self.layer_info: render.layer_caption(snap, k)}
        cell = _cell(zoom)
        cam, note = self._cam_grid(job, k, snap, cell)
        caption = render.layer_caption(snap, k) + (f"\n\n{note}" if note else "")
        cache = self.layer_img.GRADIO_CACHE
        return {self.layer_img: write_once(render.grid(view.images, snap.class_names, snap.ipc, cell), cache),
                self.layer_cam: write_once(cam, cache), self.layer_info: caption}

    def on_use_layer(self, browser: dict, watch: list[str], layer: float) -> dict:
        """`layer` as the slider shows it, 1-based."""
        jobs = self._jobs(browser, watch)
        if not jobs:
            return {self.layer_info: "No run on screen."}
        try:
            jobs[0].select_layer(int(layer) - 1)
        except Exception as exc:  # noqa: BLE001 - one sentence on the page
            return {self.layer_info: f"**Could not select:** {self._message(exc)}"}
        return {self.layer_info: render.layer_caption(jobs[0].snapshot, int(layer) - 1)}

    def on_export(self, browser: dict, watch: list[str]) -> dict:
        jobs = self._jobs(browser, watch)
        if not jobs:
            return {self.export_info: "No run on screen.", self.download: gr.skip()}
        try:
            path = jobs[0].export()
            # The runs folder is not served: the button gets this request's own copy in Gradio's cache.
            job = jobs[0]
            name = download_name(job.run_dir.name, job.snapshot.exported_space)
            copy = download_copy(job.bundle(), self.download.GRADIO_CACHE, name)
        except Exception as exc:  # noqa: BLE001 - one sentence on the page
            return {self.export_info: f"**Could not export:** {self._message(exc)}", self.download: gr.skip()}
        runs = self.registry.runs_dir.resolve()
        folder = path.parent.resolve()
        where = folder.relative_to(runs) if folder.is_relative_to(runs) else folder.name
        return {self.export_info: f"Wrote `synthetic.pt`, `images/`, `grid.png` and `export.zip` into "
                                  f"`{runs.name}/{where}` on the server.",
                self.download: gr.DownloadButton(value=str(copy), interactive=True)}

    def _lockable(self) -> list:
        return [*self.form.values(), self.start_btn, self.compare_btn, self.new_btn]

    def _rare(self) -> list:
        """What `pending` may update; it holds their positions here (a State holds data, not components)."""
        return [*self._lockable(), *self._buttons()]

    def _panel_outputs(self) -> list:
        """What `panels` may update."""
        return [self.layer, self.layer_img, self.layer_cam, self.layer_info, self.scores, self.dist_acc,
                self.dist_acc_info]

    def _buttons(self) -> list:
        return [self.pause_btn, self.resume_btn, self.step_btn, self.stop_btn, self.export_btn, self.use_layer_btn,
                self.eval_btn]

    # ------------------------------------------------------------ wiring
    def wire(self, demo: gr.Blocks) -> None:
        ids = [self.browser, self.watch]
        form = set(self.form.values()) | {self.browser}
        started = [self.browser, self.watch, self.seen, self.status, self.notice, self.runs, self.grid_a, self.grid_b,
                   self.download, self.export_info, self.scores] + self._panels()
        private = dict(api_visibility="private")
        demo.load(self.on_load, [self.browser], [self.browser, self.watch, self.seen, self.runs, self.folders],
                  **private)
        self.start_btn.click(self.on_start, form, started, concurrency_limit=None, **private)
        self.compare_btn.click(self.on_compare, form, started, concurrency_limit=None, **private)
        self.runs.input(self.on_pick_run, [self.browser, self.runs],
                        [self.browser, self.watch, self.seen, self.grid_b] + self._panels(), **private)
        self.open_btn.click(self.on_open_folder, [self.browser, self.folders],
                            [self.browser, self.watch, self.seen, self.runs, self.grid_b, self.status, self.notice]
                            + self._panels(),
                            **private)
        self.new_btn.click(self.on_new_run, [self.browser],
                           [self.browser, self.watch, self.seen, self.status, self.grid_a, self.grid_b, self.scores,
                            self.export_info, *self._lockable(), *self._buttons()] + self._panels(), **private)
        self.refresh_btn.click(self.on_refresh, [self.browser], [self.folders], **private)
        for btn, name in ((self.pause_btn, "pause"), (self.resume_btn, "resume"), (self.step_btn, "step"),
                          (self.stop_btn, "stop")):
            btn.click(self.command(name), ids, [self.export_info], concurrency_limit=None, **private)
        self.timer.tick(self.on_poll, ids + [self.seen, self.show_cam, self.journey_diff, self.cursor, self.zoom],
                        [self.status, self.grid_a, self.grid_b, self.chart, self.journey, self.scrub,
                         self.seen, self.pending, self.panels],
                        concurrency_limit=None, show_progress="hidden", **private)
        self.pending.change(self.on_pending, [self.pending], self._rare(),
                            concurrency_limit=None, show_progress="hidden", **private)
        self.panels.change(self.on_panels, [self.panels], self._panel_outputs(),
                           concurrency_limit=None, show_progress="hidden", **private)
        self.layer.input(self.on_show_layer, ids + [self.layer, self.zoom], [self.layer_img, self.layer_cam, self.layer_info],
                          concurrency_id="cam", concurrency_limit=1, show_progress="hidden", **private)
        self.scrub.input(self.on_scrub, ids + [self.scrub, self.zoom], [self.scrub_img, self.scrub_info, self.cursor, self.chart],
                         concurrency_id="scrub", concurrency_limit=4, show_progress="hidden", **private)
        self.use_layer_btn.click(self.on_use_layer, ids + [self.layer], [self.layer_info], **private)
        self.journey.select(self.on_pick_column, ids + [self.zoom], [self.layer_info], **private)
        # The poll redraws the grids and the strip at the new size; the layer panels follow the slider.
        self.zoom.change(self.on_show_layer, ids + [self.layer, self.zoom], [self.layer_img, self.layer_cam,
                                                                            self.layer_info], **private)
        self.export_btn.click(self.on_export, ids, [self.export_info, self.download], **private)
        self.eval_btn.click(self.on_evaluate, ids, [self.export_info], concurrency_limit=None, **private)
