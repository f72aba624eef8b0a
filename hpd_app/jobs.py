"""Server-side jobs: live engine runs (and run folders opened from disk) keyed by run id, each with its owner.

The registry is created by the app factory and holds a lock; there is no module-level state. A live job
subscribes to its run's events and keeps the latest immutable Snapshot; commands go to the RunController.
"""
from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import torch

from engine import Run, RunController

from . import browse
from .bundle import zip_export
from .cams import CamProvider
from .configs import parse_config
from .devicequeue import DeviceQueue
from .reduce import reduce
from .snapshot import TERMINAL, Snapshot

EXPORT_WAIT_S = 120.0  # an export waits for the step in flight; a step on a big generator can take this long
# A finished run holds its data, generator and proxy in memory: once nobody has asked about it for this
# long it is released (its folder stays and opens again). Live runs that are not finished are never released.
IDLE_RELEASE_S = 6 * 3600.0


@dataclass(frozen=True)
class Components:
    """Injected into every Run (tests, embedding apps); None loads what the config names."""
    generator: object | None = None
    classifier: object | None = None
    data_root: str | None = None


class LiveJob:
    source = "live"

    def __init__(self, run_id: str, owner: str, run: Run, queue: DeviceQueue):
        self.run_id, self.owner, self.run = run_id, owner, run
        self.run_dir = run.run_dir
        self.config = run.config
        self.device = run.config.device
        self.controller = RunController(run)
        self._queue = queue
        self._lock = threading.Lock()
        self._snap = Snapshot(run_id, run.config.method)
        self._start_paused = False
        self._launched = False
        self._tensors: dict[object, object] = {}  # "preview" / space index -> normalised CPU images, for CAMs
        run.bus.subscribe(self._on_event)

    @property
    def snapshot(self) -> Snapshot:
        return self._snap

    def _on_event(self, event) -> None:
        images = getattr(event, "images", None)
        if images is not None:
            self._tensors["preview"] = images
            if hasattr(event, "selected_file"):
                self._tensors[event.space] = images
        with self._lock:
            self._snap = reduce(self._snap, event)
            done = self._snap.state in TERMINAL
        if done:
            self._queue.release(self)

    def launch(self) -> None:
        with self._lock:
            self._launched = True
            self._snap = self._snap.evolve(state="paused" if self._start_paused else "running",
                                           message="loading data, generator and proxy")
        self.controller.start(paused=self._start_paused)

    def _pending(self, state: str, when: tuple[str, ...]) -> None:
        """Show what a command will do once the step in flight ends ("pausing", "stopping")."""
        with self._lock:
            if self._snap.state in when:
                self._snap = self._snap.evolve(state=state)

    # ----------------------------------------------------------- commands
    # Every command returns at once: the controller applies it between two steps.
    def pause(self) -> None:
        if not self._launched:
            self._start_paused = True
            return
        self.controller.pause()
        self._pending("pausing", ("running",))

    def resume(self) -> None:
        if not self._launched:
            self._start_paused = False
            return
        self.controller.resume()
        self._pending("running", ("pausing",))

    def step(self) -> None:
        if self._snap.state != "paused":
            raise ValueError(f"Step works on a paused run; this one is {self._snap.state}")
        self.controller.step_once()

    def stop(self) -> None:
        if self._queue.cancel(self):
            with self._lock:
                self._snap = self._snap.evolve(state="stopped", message="stopped before it started")
            return
        self.controller.stop()
        self._pending("stopping", ("running", "pausing", "paused"))

    def select_layer(self, space: int) -> None:
        self.controller.select_layer(space).add_done_callback(self._report)

    def _report(self, future) -> None:
        exc = future.exception()
        if exc is not None:
            with self._lock:
                self._snap = self._snap.evolve(message=str(exc))

    def export(self) -> Path:
        """Write the selected layer's set (the last finished one if none is selected) and zip it; a run
        that is stepping does it between two steps, so this waits for the step in flight at most."""
        snap = self._snap
        if not snap.spaces:
            raise ValueError("no layer has finished yet; export once the first layer is done")
        space = snap.selected_space if snap.selected_space is not None else snap.spaces[-1].index
        try:
            path = self.controller.export(space).result(timeout=EXPORT_WAIT_S)
        except FutureTimeout:
            raise ValueError("the run is in the middle of a long step; the export will be written when it "
                             "ends; export again then to download it") from None
        zip_export(self.run.run_dir)
        return path

    def cam_input(self, key):
        """(normalised images, labels, classifier spec, dataset) for the CAM of the preview or a space."""
        images = self._tensors.get(key)
        snap = self._snap
        if images is None or not snap.class_names:
            return None
        labels = torch.arange(len(snap.class_names)).repeat_interleave(snap.ipc)
        return images, labels, self.config.classifier_spec, self.config.dataset


class JobRegistry:
    def __init__(self, runs_dir: Path, components: Components = Components(), *,
                 idle_release_s: float = IDLE_RELEASE_S, clock=time.monotonic):
        self.runs_dir = Path(runs_dir)
        self.components = components
        self.cams = CamProvider(components.classifier)
        self._queue = DeviceQueue()
        self._lock = threading.Lock()
        self._jobs: dict[str, LiveJob | browse.FolderJob] = {}
        self._seen: dict[str, float] = {}       # run id -> when its owner last asked about it
        self._released: dict[str, tuple[str, str]] = {}  # run id -> (owner, folder name), for the owner's message
        self._idle_release_s, self._clock = idle_release_s, clock

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every live run and wait for its thread: an interpreter that exits while a run's thread
        is inside a torch op aborts ("terminate called without an active exception")."""
        with self._lock:
            live = [j for j in self._jobs.values() if isinstance(j, LiveJob)]
        for job in live:
            job.controller.stop()
        deadline = time.monotonic() + timeout
        for job in live:
            job.controller.wait(max(0.0, deadline - time.monotonic()))

    def start(self, values: dict | str, owner: str) -> str:
        """Validate the config, create the run and queue it; raises ValueError for bad input."""
        if not owner:
            raise ValueError("a run needs an owner token")
        config = parse_config(values, self.components.data_root)
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{config.method}-{secrets.token_hex(3)}"
        c = self.components
        run = Run(config, self.runs_dir / run_id, generator=c.generator, classifier=c.classifier)
        job = LiveJob(run_id, owner, run, self._queue)
        self._add(run_id, job)
        self._queue.submit(job)
        return run_id

    def open_folder(self, name: str, owner: str) -> str:
        """Browse a run folder under the runs dir (CLI runs too); your own live run reattaches instead."""
        with self._lock:
            live = self._jobs.get(name)
        if isinstance(live, LiveJob):
            if live.owner == owner:
                return name
            raise ValueError(f"{name} is a live run of another user on this server")
        run_id = f"{name}@{secrets.token_hex(3)}"
        job = browse.FolderJob(run_id, owner, browse.run_folder(self.runs_dir, name))
        self._add(run_id, job)
        return run_id

    def job(self, run_id: str, owner: str) -> LiveJob | browse.FolderJob:
        with self._lock:
            job = self._jobs.get(run_id)
            if job is not None and job.owner == owner:
                self._seen[run_id] = self._clock()
            released_owner, folder = self._released.get(run_id, (None, None))
        # Someone else's run answers exactly like a missing one: ids are not secrets, tokens are.
        if job is None and released_owner == owner:
            raise LookupError(f"run {run_id!r} was released after {self._idle_release_s / 3600:g} h "
                              f"without a visit; open its folder {folder!r} to browse and export it")
        if job is None or job.owner != owner:
            raise LookupError(f"no run {run_id!r} of yours on this server")
        return job

    def _add(self, run_id: str, job: LiveJob | browse.FolderJob) -> None:
        """Register a job, first releasing the idle ones: memory is only taken here, so only checked here."""
        with self._lock:
            now = self._clock()
            for rid in [r for r, j in self._jobs.items() if self._releasable(j, now - self._seen[r])]:
                gone = self._jobs.pop(rid)
                self._released[rid] = (gone.owner, gone.run_dir.name)
                del self._seen[rid]
            self._jobs[run_id], self._seen[run_id] = job, now

    def _releasable(self, job: LiveJob | browse.FolderJob, idle_s: float) -> bool:
        if idle_s < self._idle_release_s:
            return False
        return isinstance(job, browse.FolderJob) or job.snapshot.state in TERMINAL

    def owned(self, owner: str) -> list[str]:
        with self._lock:
            return [rid for rid, job in self._jobs.items() if job.owner == owner]

    def queue_position(self, job) -> int | None:
        return self._queue.position(job) if isinstance(job, LiveJob) else None

    def folders(self) -> list[str]:
        return browse.list_run_folders(self.runs_dir)
