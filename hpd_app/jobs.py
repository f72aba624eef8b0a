"""Server-side jobs: live engine runs (and run folders opened from disk) keyed by run id, each with its owner.

The registry is created by the app factory and holds a lock; there is no module-level state. A live job
subscribes to its run's events and keeps the latest immutable Snapshot; commands go to the RunController.

Owners are opaque ids (hpd_app.owners: a sha256 of a token or session key), recorded in each run
folder's run.json, so ownership outlives a restart or a release from memory. Folders are matched by
their resolved path, whatever spelling a client sends. What one owner and the whole server may hold is
bounded (ServerLimits, flags of launch.py); a run paused for long while others wait for its device is
suspended (its thread ends, its memory goes) and continues from its last finished layer on Resume.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from engine import ErrorEvent, Run, RunController, StateEvent, Turns, dataset_info, resolve_device
from engine.run import remote
from engine.run.lock import folder_lock

from . import browse
from .bundle import zip_export
from .previews import journey_gif
from .processjob import ProcessJob, check_processes
from .render import journey
from .cams import CamProvider
from .configs import Prechecks, config_values, parse_config
from .devicequeue import DeviceQueue
from .errors import log
from .evaluation import EvalJob, EvalSettings, EvalStatus, read_result
from .reduce import reduce
from .snapshot import TERMINAL, Snapshot

EXPORT_WAIT_S = 120.0  # an export waits for the step in flight; a step on a big generator can take this long
HOUSEKEEPING_S = 1.0   # how often paused runs are checked for a device others wait for
MAX_REMEMBERED = 10_000  # released run ids remembered for their owner's message


@dataclass(frozen=True)
class Components:
    """Injected into every Run (tests, embedding apps); None loads what the config names. `listeners`
    are extra event subscribers attached to every run; `own_process=False` keeps runs in the server's
    threads even when nothing is injected."""
    generator: object | None = None
    classifier: object | None = None
    data_root: str | None = None
    listeners: tuple = ()
    own_process: bool = True

    @property
    def separate(self) -> bool:
        """Whether each run computes in a process of its own (engine.run.remote), away from the server's
        GIL: unless code was given here (a generator, classifier or listener lives in this process)."""
        return self.own_process and self.generator is None and self.classifier is None and not self.listeners


@dataclass(frozen=True)
class ServerLimits:
    """What one owner and the whole server may hold at once (launch.py's flags set them)."""
    runs_per_owner: int = 4          # queued, running and paused runs of one owner
    queued: int = 32                 # runs waiting for a device, all owners together
    folders_per_owner: int = 16      # run folders one owner has open (the least recently seen goes first)
    pause_release_s: float = 600.0   # a run paused this long gives its device to the next in line
    idle_release_s: float = 600.0    # a finished run or opened folder unvisited this long leaves memory


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


class LiveJob:
    """A run this server computes. Phases: waiting (queued), live (its thread runs), suspended (its
    thread ended to give the device back; Resume queues it again) and done."""
    source = "live"

    def __init__(self, run_id: str, owner: str, config, run_dir: Path, components: Components,
                 queue: DeviceQueue, clock=time.monotonic, turns: Turns | None = None):
        self.run_id, self.owner, self.config = run_id, owner, config
        self._turns = turns  # shared with the runs it is compared with: their steps alternate
        self.run_dir = Path(run_dir)
        self.device = config.device
        self._components, self._queue, self._clock = components, queue, clock
        self._lock = threading.Lock()   # never held while calling the controller (it may call back)
        self._snap = Snapshot(run_id, config.method)
        self._phase = "waiting"
        self._start_paused = False
        self._stop_on_launch = False     # a Stop that raced the queue handing this job its device
        self._fresh_run = False          # the next launch continues a suspended run in a new Run
        self._suspending = False
        self._resume_after_suspend = False
        self._paused_since: float | None = None
        self._tensors: dict[object, object] = {}  # "preview" / space index -> normalised CPU images, for CAMs
        self.on_finished: list = []      # called (no arguments) once the run has finished, after the device is freed
        self.run: Run | remote.RemoteRun | None = None
        self.controller: RunController | remote.RemoteController | None = None
        self._new_run()

    def _new_run(self) -> None:
        c = self._components
        if c.separate:
            run = remote.RemoteRun(self.config, self.run_dir, owner=self.owner)
            controller = remote.RemoteController(run, self._turns)
        else:
            run = Run(self.config, self.run_dir, generator=c.generator, classifier=c.classifier, owner=self.owner)
            for listener in c.listeners:
                run.bus.subscribe(listener)
            controller = RunController(run, self._turns)
        run.bus.subscribe(self._on_event)
        controller.on_end(self._ended)
        self.run, self.controller = run, controller

    @property
    def snapshot(self) -> Snapshot:
        return self._snap

    @property
    def active(self) -> bool:
        """Queued, running, paused or suspended: it counts against its owner's limit."""
        return self._phase != "done"

    @property
    def phase(self) -> str:
        return self._phase

    def paused_for(self, now: float) -> float:
        since = self._paused_since
        return 0.0 if since is None or self._phase != "live" else now - since

    def _on_event(self, event) -> None:
        images = getattr(event, "images", None)
        if images is not None:
            self._tensors["preview"] = images
            if hasattr(event, "selected_file"):
                self._tensors[event.space] = images
        if isinstance(event, ErrorEvent) and event.source == "run":
            log.error("run %s failed: %s\n%s", self.run_id, event.message, event.traceback)
        with self._lock:
            self._snap = reduce(self._snap, event)
            if isinstance(event, StateEvent):
                self._paused_since = self._clock() if event.state == "paused" else None

    def launch(self) -> None:
        """Called by the device queue when the device is this job's."""
        with self._lock:
            if self._stop_on_launch:
                self._phase = "done"
                self._snap = self._snap.evolve(state="stopped", message="stopped before it started")
        if self._phase == "done":
            self._queue.release(self)
            return
        with self._lock:
            self._phase, fresh, self._fresh_run = "live", self._fresh_run, False
            paused = self._start_paused
            self._snap = self._snap.evolve(state="paused" if paused else "running", message=(
                "continuing from its last finished layer" if fresh else "loading data, generator and proxy"))
        if fresh:
            self._new_run()
        self.controller.start(paused=paused)

    def _ended(self, run: Run) -> None:
        """The run's thread has ended, however it ended: a final state the page shows, the device freed."""
        with self._lock:
            if run is not self.run:
                return
            requeue = False
            if run.status == "suspended" and self._phase == "live":
                self._phase, self._fresh_run = "suspended", True
                requeue, self._resume_after_suspend, self._suspending = self._resume_after_suspend, False, False
                self.run = self.controller = None   # its tensors go; the folder keeps the checkpoint
            else:
                self._phase = "done"
                if self._snap.state not in TERMINAL:  # the final event never arrived (the log was failing)
                    state = run.status if run.status in TERMINAL else "failed"
                    message = self._snap.message
                    if state == "failed" and not message:
                        message = "the run ended unexpectedly; the server log has the details"
                    self._snap = self._snap.evolve(state=state, message=message)
        self._queue.release(self)
        if requeue:
            self.resume()
        if self._phase == "done" and self._snap.state == "finished":
            for callback in self.on_finished:
                try:
                    callback()
                except Exception as exc:  # noqa: BLE001 - a follow-up must not hide the run's own end
                    log.error("run %s: after finishing, %s failed: %s", self.run_id, callback, exc)

    def close(self) -> None:
        """The job leaves memory: a run in a process of its own lets that process go (at once; a run still
        going stops between two steps). A run in this process has nothing to let go."""
        controller = self.controller
        if controller is not None:
            controller.close(timeout=0)

    def suspend(self, message: str) -> None:
        with self._lock:
            if self._phase != "live" or self._suspending:
                return
            self._suspending = True
            controller = self.controller
        controller.suspend(message)

    def _pending(self, state: str, when: tuple[str, ...]) -> None:
        """Show what a command will do once the step in flight ends ("pausing", "stopping")."""
        with self._lock:
            if self._snap.state in when:
                self._snap = self._snap.evolve(state=state)

    # ----------------------------------------------------------- commands
    # Every command returns at once: the controller applies it between two steps.
    def pause(self) -> None:
        with self._lock:
            if self._phase == "waiting":
                self._start_paused = True
            if self._phase != "live":
                return
            controller = self.controller
        controller.pause()
        self._pending("pausing", ("running",))

    def resume(self) -> None:
        with self._lock:
            phase = self._phase
            self._start_paused = False
            if phase == "live" and self._suspending:
                self._resume_after_suspend = True  # it is suspending now: queue it again once it has
            if phase == "suspended":
                self._phase = "waiting"
                self._snap = self._snap.evolve(state="queued", message="waiting for the device again; it "
                                               "continues from its last finished layer")
            controller = self.controller
        if phase == "suspended":
            self._queue.submit(self)
        elif phase == "live":
            controller.resume()
            self._pending("running", ("pausing",))

    def step(self) -> None:
        if self._snap.state != "paused" or self._phase != "live":
            raise ValueError(f"Step works on a paused run; this one is {self._snap.state}")
        self.controller.step_once()

    def stop(self) -> None:
        if self._queue.cancel(self):
            with self._lock:
                self._phase = "done"
                self._snap = self._snap.evolve(state="stopped", message="stopped before it started")
            if (self.run_dir / "run.json").is_file():  # a suspended run that was queued again
                browse.mark_state(self.run_dir, "stopped")
            return
        with self._lock:
            phase, controller = self._phase, self.controller
            if phase == "waiting":  # the queue is handing it the device right now
                self._stop_on_launch = True
            if phase == "suspended":
                self._phase = "done"
                self._snap = self._snap.evolve(state="stopped", message="stopped while suspended; its folder "
                                               "keeps every finished layer")
        if phase == "suspended":
            browse.mark_state(self.run_dir, "stopped")
        elif phase == "live":
            controller.stop()
            self._pending("stopping", ("running", "pausing", "paused"))

    def _controller(self) -> RunController:
        controller = self.controller
        if controller is None:
            raise ValueError("this run is suspended (it gave its device to another run while paused); "
                             "Resume it first")
        return controller

    def select_layer(self, space: int) -> None:
        self._controller().select_layer(space).add_done_callback(self._report)

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
        controller = self._controller()
        space = snap.selected_space if snap.selected_space is not None else snap.spaces[-1].index
        try:
            path = controller.export(space).result(timeout=EXPORT_WAIT_S)
        except FutureTimeout:
            raise ValueError("the run is in the middle of a long step; the export will be written when it "
                             "ends; export again then to download it") from None
        with folder_lock(self.run_dir):
            zip_export(self.run_dir, journey(self._snap), journey_gif(self.run_dir, self._snap))
        return path

    def bundle(self) -> Path:
        path = self.run_dir / "export.zip"
        if not path.is_file():
            raise ValueError("nothing exported from this run yet; export first")
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
                 limits: ServerLimits = ServerLimits(), idle_release_s: float | None = None,
                 evaluation: EvalSettings = EvalSettings(),
                 clock=time.monotonic, housekeeping_s: float = HOUSEKEEPING_S):
        self.runs_dir = Path(runs_dir)
        self.components = components
        if idle_release_s is not None:
            limits = replace(limits, idle_release_s=idle_release_s)
        self.limits = limits
        self.eval_settings = evaluation
        self.cams = CamProvider(components.classifier)
        self.prechecks = Prechecks(components.generator, components.classifier)
        self._queue = DeviceQueue()
        self._lock = threading.Lock()
        self._jobs: dict[str, LiveJob | browse.FolderJob] = {}
        self._seen: dict[str, float] = {}       # run id -> when its owner last asked about it
        self._released: dict[str, tuple[str, str]] = {}  # run id -> (owner, folder name), for the owner's message
        self._owners: dict[Path, tuple[tuple, str | None]] = {}  # folder -> (run.json stamp, recorded owner)
        self._evals: dict[str, EvalJob] = {}    # run id -> its latest evaluation started from the page
        self._eval_start = threading.Lock()
        self._results: dict[Path, tuple[tuple, EvalStatus | None]] = {}  # folder -> (files' stamp, eval.json read)
        self._clock = clock
        self._closing = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeeping, args=(housekeeping_s,), daemon=True,
                                             name="hpd-housekeeping")
        self._housekeeper.start()
        if components.separate:
            remote.warm_up()

    @property
    def _idle_release_s(self) -> float:
        return self.limits.idle_release_s

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every live run and wait for its thread: an interpreter that exits while a run's thread
        is inside a torch op aborts ("terminate called without an active exception")."""
        self._closing.set()
        with self._lock:
            live = [j.controller for j in self._jobs.values() if isinstance(j, LiveJob) and j.controller]
            processes = [j for j in self._jobs.values() if isinstance(j, ProcessJob) and j.active]
        for job in processes:  # torchrun and its workers are in sessions of their own: they would outlive us
            job.stop()
        with self._lock:
            evaluations = list(self._evals.values())
        for ejob in evaluations:
            ejob.stop()
        for controller in live:
            controller.stop()
        deadline = time.monotonic() + timeout
        for controller in live:
            controller.wait(max(0.0, deadline - time.monotonic()))
            controller.close(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------ housekeeping
    def _housekeeping(self, every_s: float) -> None:
        while not self._closing.wait(every_s):
            try:
                self.housekeep()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad pass
                log.exception("housekeeping failed")

    def housekeep(self) -> None:
        """Suspend runs paused for longer than the limit while another run waits for their device."""
        now, limit = self._clock(), self.limits.pause_release_s
        with self._lock:
            live = [j for j in self._jobs.values() if isinstance(j, LiveJob)]
        for job in live:
            if job.paused_for(now) >= limit and self._queue.waiting(job.device):
                job.suspend(f"paused for {_duration(limit)} while other runs waited: its device went to the next "
                            "run; Resume queues it again (it continues from its last finished layer)")

    # ------------------------------------------------------------ runs
    def start(self, values: dict | str, owner: str) -> str:
        """Validate the config, create the run and queue it; raises ValueError for bad input or a full
        queue. Everything that can be checked without the device is checked here, before queuing."""
        return self.start_together([values], owner)[0]

    def start_together(self, configs: list[dict | str], owner: str, evaluate: bool = False) -> list[str]:
        """Runs compared side by side: all validated first (one bad config starts none), then queued as
        one job that takes one device, on which they step in turn and so grow together. `evaluate`: each
        run's set is evaluated by the studio's suite once it has finished. A config's `processes` > 1
        (not a RunConfig field): one run under torchrun in that many processes (ProcessJob)."""
        if not owner:
            raise ValueError("a run needs an owner token")
        values = [dict(config_values(v)) for v in configs]
        asked = [v.pop("processes", 1) for v in values]
        processes = asked[0] if len(set(map(repr, asked))) == 1 else None
        if processes is None:
            raise ValueError("runs compared together must use the same number of processes")
        parsed = [parse_config(v, self.components.data_root) for v in values]
        for config in parsed:
            self.prechecks.check(config)
        if processes != 1:
            return [self._start_processes(parsed, owner, processes)]
        with self._lock:
            self._check_room(owner, len(parsed))
            turns = (Turns(remote.context() if self.components.separate else None) if len(parsed) > 1 else None)
            jobs = []
            for config in parsed:
                run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{config.method}-{secrets.token_hex(3)}"
                jobs.append(LiveJob(run_id, owner, config, self.runs_dir / run_id, self.components, self._queue,
                                    self._clock, turns))
                self._add(run_id, jobs[-1])
                if evaluate:
                    jobs[-1].on_finished.append(lambda rid=run_id: self.evaluate(rid, owner))
            if len(jobs) == 1:
                self._queue.submit(jobs[0])
            else:
                self._queue.submit_together(jobs)
        return [j.run_id for j in jobs]

    def _start_processes(self, parsed: list, owner: str, processes: int) -> str:
        if len(parsed) != 1:
            raise ValueError("Compare runs each run in one process; set Processes to 1 to compare")
        config = parsed[0]
        check_processes(config, processes)
        if self.components.generator is not None or self.components.classifier is not None:
            raise ValueError("this server was given its generator and classifier in code, which other processes "
                             "cannot load; run on one process")
        with self._lock:
            self._check_room(owner, 1)
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{config.method}-{secrets.token_hex(3)}"
            job = ProcessJob(run_id, owner, config, self.runs_dir / run_id, processes, self._queue)
            self._add(run_id, job)
            self._queue.submit(job)
        return run_id

    def _check_room(self, owner: str, adding: int) -> None:
        """The caller holds the lock."""
        mine = sum(1 for j in self._jobs.values()
                   if isinstance(j, (LiveJob, ProcessJob)) and j.owner == owner and j.active)
        if mine + adding > self.limits.runs_per_owner:
            more = f" (this asks for {adding} more)" if adding > 1 else ""
            raise ValueError(f"you already have {mine} runs queued, running or paused here{more}, the most one user "
                             f"may hold on this server ({self.limits.runs_per_owner}); stop one or wait for one "
                             "to finish")
        waiting = self._queue.waiting()
        if waiting + adding > self.limits.queued:
            raise ValueError(f"the server's queue is full ({waiting} runs wait for a device, the most it takes); "
                             "try again once some have started")

    # ------------------------------------------------------------ evaluations
    def evaluate(self, run_id: str, owner: str) -> EvalStatus:
        """Export the run's selected layer (if that is not what was exported last) and queue the studio's
        suite on it; an evaluation already queued or running, or one of this very set, is returned as is.
        One owner has at most `runs_per_owner` evaluations queued or running."""
        job = self.job(run_id, owner)
        with self._eval_start:  # one request at a time: two clicks must not queue the same set twice
            return self._evaluate(run_id, owner, job)

    def _evaluate(self, run_id: str, owner: str, job) -> EvalStatus:
        with self._lock:
            current = self._evals.get(run_id)
            pending = sum(1 for rid, e in self._evals.items() if e.status.state in ("queued", "running")
                          and getattr(self._jobs.get(rid), "owner", None) == owner)
        if current is not None and current.status.state in ("queued", "running"):
            return current.status
        if pending >= self.limits.runs_per_owner:
            raise ValueError(f"you already have {pending} evaluations queued or running here, the most one user "
                             f"may hold on this server ({self.limits.runs_per_owner}); wait for one to finish")
        if job.snapshot.state not in TERMINAL:
            raise ValueError("the run is still going; evaluate it once it has finished (or stop it first)")
        snap = job.snapshot
        exported = snap.export_path and snap.exported_space is not None and snap.exported_space == snap.selected_space
        folder = self._eval_folder(job, Path(snap.export_path) if exported else job.export())
        done = read_result(folder)
        if done is not None:
            return done
        info = dataset_info(browse.read_meta(folder)["config"]["dataset"])
        # A folder opened from disk is evaluated on this server's default device, whatever the CLI run used.
        device = job.device if isinstance(job, (LiveJob, ProcessJob)) else str(resolve_device(None))
        ejob = EvalJob(folder, device, self.eval_settings.suite(info.resolution), self._queue,
                       self.components.data_root)
        with self._lock:
            self._evals[run_id] = ejob
        self._queue.submit(ejob)
        return ejob.status

    @staticmethod
    def _eval_folder(job, synthetic: Path) -> Path:
        """The folder of the exported set; a shared folder's export gets the run's run.json beside it, which
        the suite reads (the run's config: dataset, backbone, seed)."""
        folder = Path(synthetic).parent
        if not (folder / "run.json").is_file():
            meta = browse.read_meta(job.run_dir)
            meta.pop("owner", None)
            (folder / "run.json").write_text(json.dumps(meta, indent=1))
        return folder

    def evaluation(self, run_id: str, owner: str) -> EvalStatus | None:
        """The run's evaluation: the one started here, else a finished eval.json of its current export."""
        job = self.job(run_id, owner)
        with self._lock:
            ejob = self._evals.get(run_id)
        if ejob is not None and (ejob.status.state != "done" or job.snapshot.export_path is None
                                 or Path(job.snapshot.export_path).parent == ejob.folder):
            return ejob.status
        folder = Path(job.snapshot.export_path).parent if job.snapshot.export_path else job.run_dir
        return self._cached_result(folder)

    def _cached_result(self, folder: Path) -> EvalStatus | None:
        """read_result hashes synthetic.pt: re-read only when eval.json or synthetic.pt changed."""
        stamp = []
        for name in ("eval.json", "synthetic.pt"):
            try:
                st = (folder / name).stat()
                stamp.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamp.append(None)
        cached = self._results.get(folder)
        if cached is not None and cached[0] == tuple(stamp):
            return cached[1]
        result = read_result(folder) if None not in stamp else None
        self._results[folder] = (tuple(stamp), result)
        return result

    @staticmethod
    def _not_a_folder(name: str) -> ValueError:
        # Someone else's folder answers exactly like a missing one (browse.run_folder's words).
        return ValueError(f"{str(name)[:80]!r} is not a run folder directly under the runs folder")

    def open_folder(self, name: str, owner: str) -> str:
        """Browse a run folder under the runs dir: your own or a CLI run's (no owner recorded); your own
        live run reattaches instead. Another owner's folder, however spelled, is refused as missing."""
        path = browse.run_folder(self.runs_dir, name)
        with self._lock:
            now = self._clock()
            for rid, job in self._jobs.items():
                if isinstance(job, LiveJob) and job.run_dir.resolve() == path:
                    if job.owner != owner:
                        raise self._not_a_folder(name)
                    return rid  # reattached: its next status call counts as the visit
            recorded = self.folder_owner(path)
            if recorded is not None and recorded != owner:
                raise self._not_a_folder(name)
            for rid, job in self._jobs.items():
                if isinstance(job, browse.FolderJob) and job.owner == owner and job.run_dir == path:
                    self._seen[rid] = now
                    return rid
        run_id = f"{path.name}@{secrets.token_hex(4)}"
        job = browse.FolderJob(run_id, owner, path, shared=recorded is None)
        with self._lock:
            self._add(run_id, job)
        return run_id

    def folder_owner(self, path: Path) -> str | None:
        """The owner recorded in a folder's run.json (None: a CLI run), cached until run.json changes."""
        meta_file = Path(path) / "run.json"
        try:
            st = meta_file.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._owners.get(Path(path))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        owner = browse.read_meta(path).get("owner")
        owner = owner if isinstance(owner, str) else None
        self._owners[Path(path)] = (stamp, owner)
        return owner

    def job(self, run_id: str, owner: str) -> LiveJob | browse.FolderJob:
        with self._lock:
            job = self._jobs.get(run_id)
            if job is not None and job.owner == owner:
                self._seen[run_id] = self._clock()
            released_owner, folder = self._released.get(run_id, (None, None))
        # Someone else's run answers exactly like a missing one: ids are not secrets, tokens are.
        if job is None and released_owner == owner:
            raise LookupError(f"run {run_id!r} was released after {_duration(self._idle_release_s)} without a "
                              f"visit; open its folder {folder!r} to browse and export it")
        if job is None or job.owner != owner:
            raise LookupError(f"no run {str(run_id)[:80]!r} of yours on this server")
        return job

    def _add(self, run_id: str, job: LiveJob | browse.FolderJob) -> None:
        """Register a job (the caller holds the lock), first releasing the idle ones and, for a folder,
        the owner's least recently seen folder over the limit: memory is only taken here."""
        now = self._clock()
        for rid in [r for r, j in self._jobs.items() if self._releasable(j, now - self._seen[r])]:
            self._release(rid)
        if isinstance(job, browse.FolderJob):
            folders = sorted((self._seen[r], r) for r, j in self._jobs.items()
                             if isinstance(j, browse.FolderJob) and j.owner == job.owner)
            for _, rid in folders[: max(0, len(folders) - self.limits.folders_per_owner + 1)]:
                self._release(rid)
        self._jobs[run_id], self._seen[run_id] = job, now

    def _release(self, run_id: str) -> None:
        gone = self._jobs.pop(run_id)
        if isinstance(gone, LiveJob):
            gone.close()
        self._evals.pop(run_id, None)  # its eval.json stays in the folder
        self._released[run_id] = (gone.owner, gone.run_dir.name)
        del self._seen[run_id]
        while len(self._released) > MAX_REMEMBERED:
            del self._released[next(iter(self._released))]

    def _releasable(self, job: LiveJob | browse.FolderJob, idle_s: float) -> bool:
        if idle_s < self._idle_release_s:
            return False
        # A final state is enough: a thread still closing the folder ends on its own and frees its device.
        return isinstance(job, browse.FolderJob) or job.snapshot.state in TERMINAL

    def owned(self, owner: str) -> list[str]:
        with self._lock:
            return [rid for rid, job in self._jobs.items() if job.owner == owner]

    def queue_position(self, job) -> int | None:
        return self._queue.position(job) if isinstance(job, (LiveJob, ProcessJob)) else None

    def folders(self, owner: str) -> list[str]:
        """Folder names this owner may open: theirs and the CLI's (no owner recorded)."""
        names = browse.list_run_folders(self.runs_dir)
        return [n for n in names if self.folder_owner(self.runs_dir / n) in (None, owner)]
