"""A run on several processes: `torchrun ... -m engine distill` as a subprocess, followed through its folder.

The studio cannot drive a distributed run's steps itself (every rank must take the same step), so such a
run is a command-line run that the server launches: queued for its device like any run, started under
torchrun when the device is its, and read back from RUN_DIR the way an opened folder is (browse.FolderJob).
Stop ends the processes; the folder keeps every finished layer, and `torchrun ... -m engine distill
--resume RUN_DIR` continues it. Pause and Step are refused with the reason.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import MISSING, fields
from pathlib import Path

from engine import RunConfig
from engine.run.context import check_distributable

from . import browse
from .errors import log
from .snapshot import TERMINAL, Snapshot

STOP_WAIT_S = 20.0   # after SIGTERM, how long the processes get before SIGKILL
ERROR_TAIL = 4000    # characters of the subprocess's stderr kept for the failure message


def config_argv(config: RunConfig) -> list[str]:
    """`distill` flags that rebuild `config`: every field that differs from its default."""
    argv = []
    for f in fields(RunConfig):
        value = getattr(config, f.name)
        default = f.default if f.default is not MISSING else None
        if value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def torchrun_argv(config: RunConfig, processes: int, run_dir: Path, owner: str) -> list[str]:
    threads = max(1, (os.cpu_count() or 1) // processes)  # on CPU the processes share the cores
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            "-m", "engine", "distill", *config_argv(config), "--out", str(run_dir), "--owner-id", owner,
            "--threads", str(threads)]


def check_processes(config: RunConfig, processes) -> None:
    """One sentence for a process count this machine or the objective cannot take."""
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise ValueError(f"Processes must be a whole number of at least 1, got {processes!r}")
    if config.device.startswith("cuda"):
        import torch
        have, what = torch.cuda.device_count(), "GPUs"
    else:
        have, what = os.cpu_count() or 1, "CPU cores"
    if processes > have:
        raise ValueError(f"Processes {processes} is more than this server's {have} {what}; choose at most {have}")
    check_distributable(config, processes)


def _last_error(stderr: str) -> str:
    """The child's one-sentence refusal or failure ("error: ..."), else the last line torchrun printed."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith("error: ")]
    return (ours[-1][len("error: "):] if ours else (lines[-1] if lines else "the processes ended without a word"))


class ProcessJob:
    """A run the server computes in `processes` torchrun processes. Phases: waiting, live, done."""
    source = "process"

    def __init__(self, run_id: str, owner: str, config: RunConfig, run_dir: Path, processes: int, queue):
        self.run_id, self.owner, self.config, self.processes = run_id, owner, config, processes
        self.run_dir, self.device, self._queue = Path(run_dir), config.device, queue
        self._lock = threading.Lock()
        self._phase = "waiting"
        self._stopping = False
        self._proc: subprocess.Popen | None = None
        self._folder: browse.FolderJob | None = None
        self._snap = Snapshot(run_id, config.method, source="process",
                              message=f"waiting for the device (then {processes} processes under torchrun)")

    @property
    def active(self) -> bool:
        return self._phase != "done"

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def snapshot(self) -> Snapshot:
        folder = self._follower()
        if folder is None:
            return self._snap
        snap = folder.snapshot.evolve(run_id=self.run_id, source="process")
        with self._lock:
            if self._snap.state in ("failed", "stopped") and snap.state not in ("finished",):
                return snap.evolve(state=self._snap.state, message=self._snap.message)
        return snap

    def _follower(self) -> browse.FolderJob | None:
        with self._lock:
            if self._folder is None and (self.run_dir / "run.json").is_file():
                self._folder = browse.FolderJob(self.run_id, self.owner, self.run_dir)
            return self._folder

    def launch(self) -> None:
        """Called by the device queue when the device is this job's."""
        with self._lock:
            if self._stopping:
                self._phase = "done"
                self._snap = self._snap.evolve(state="stopped", message="stopped before it started")
        if self._phase == "done":
            self._queue.release(self)
            return
        argv = torchrun_argv(self.config, self.processes, self.run_dir, self.owner)
        with self._lock:
            try:
                # A session of its own: Stop signals torchrun and every worker it started, nothing else.
                self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                              start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
            except OSError as exc:
                self._phase = "done"
                self._snap = self._snap.evolve(state="failed", message=f"torchrun could not start ({exc})")
            else:
                self._phase = "live"
                self._snap = self._snap.evolve(state="running", message=f"starting {self.processes} processes")
        if self._proc is None:
            self._queue.release(self)
            return
        threading.Thread(target=self._wait, name=f"torchrun:{self.run_dir.name}", daemon=True).start()

    def _wait(self) -> None:
        proc = self._proc
        try:
            stderr = ""
            for chunk in iter(lambda: proc.stderr.read(4096), ""):  # progress bars too: keep only the tail
                stderr = (stderr + chunk)[-ERROR_TAIL:]
            code = proc.wait()
            with self._lock:
                if self._stopping:
                    self._snap = self._snap.evolve(state="stopped", message="stopped; the folder keeps every "
                                                   "finished layer (continue with torchrun ... --resume)")
                elif code != 0:
                    self._snap = self._snap.evolve(state="failed", message=_last_error(stderr))
                    log.error("torchrun run %s ended with %s:\n%s", self.run_id, code, stderr)
            if self._stopping and (self.run_dir / "run.json").is_file():
                self._mark_stopped()
        finally:
            with self._lock:
                self._phase = "done"
            self._queue.release(self)

    def _mark_stopped(self) -> None:
        """run.json says "stopped"; a reader of the folder marking it "interrupted" at the same moment holds
        its lock for an instant (mark_state then leaves it), so try again until it says so."""
        for _ in range(50):
            browse.mark_state(self.run_dir, "stopped")
            if browse.read_meta(self.run_dir).get("state") == "stopped":
                return
            time.sleep(0.1)

    # ----------------------------------------------------------- commands
    def _refuse(self, what: str) -> None:
        raise ValueError(f"{what} does not work on a run on several processes (each step is every process's); "
                         "Stop it and continue it later from its folder with torchrun ... --resume")

    def pause(self) -> None:
        self._refuse("Pause")

    def resume(self) -> None:
        self._refuse("Resume")

    def step(self) -> None:
        self._refuse("Step")

    def stop(self) -> None:
        if self._queue.cancel(self):
            with self._lock:
                self._phase = "done"
                self._snap = self._snap.evolve(state="stopped", message="stopped before it started")
            return
        with self._lock:
            self._stopping = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            threading.Thread(target=self._terminate, args=(proc,), daemon=True).start()

    @staticmethod
    def _terminate(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _browse(self, what: str) -> browse.FolderJob:
        folder = self._follower()
        if folder is None:
            raise ValueError(f"{what}: the run has not written its folder yet; try again once a layer has finished")
        return folder

    def select_layer(self, space: int) -> None:
        self._browse("Use this layer").select_layer(space)

    def export(self) -> Path:
        if self.snapshot.state not in TERMINAL:
            raise ValueError("export a run on several processes once it has ended (its processes write the folder)")
        return self._browse("Export").export()

    def bundle(self) -> Path:
        return self._browse("Download").bundle()

    def cam_input(self, key):
        folder = self._follower()
        return None if folder is None else folder.cam_input(key)
