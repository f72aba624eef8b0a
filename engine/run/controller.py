"""Drive a Run on a background thread; commands come from any thread and never wait for a step.

Pause, resume, step-once and stop set flags under a small lock of their own; layer choices and exports
are queued and applied by the run's thread between two steps (or at once, in the caller's thread, when
no run thread is going). The lock is never held while a step computes, so a command returns at once
however long a step takes; `requested` says what is pending until the step in flight ends.
"""
from __future__ import annotations

import sys
import threading
from collections import deque
from concurrent.futures import Future
from typing import Callable

from .run import Run
from .turns import Turns


class RunController:
    def __init__(self, run: Run, turns: Turns | None = None):
        """`turns`: shared with other runs on the same device, whose steps then alternate with this one's."""
        self.run = run
        self._turns = turns
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._apply_lock = threading.Lock()   # one command at a time, in whichever thread applies it
        self._paused = False
        self._stop = False
        self._suspend: str | None = None       # the message of a pending suspend()
        self._on_end: list[Callable[[Run], None]] = []
        self._pending_steps = 0
        self._commands: deque[tuple[Callable, Future]] = deque()
        self._accepting = False               # the run thread will apply queued commands
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> str:
        return self.run.status

    @property
    def requested(self) -> str | None:
        """"stop" or "pause" while the run is still finishing the step in flight, else None."""
        with self._lock:
            if self._stop and self.run.status not in ("stopped", "finished", "failed", "suspended"):
                return "stop"
            if self._paused and self.run.status == "running" and not self._pending_steps:
                return "pause"
            return None

    def start(self, paused: bool = False) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("this run has already been started")
            self._paused, self._accepting = paused, True
            self._thread = threading.Thread(target=self._loop, name=f"run:{self.run.run_dir.name}", daemon=True)
            self._thread.start()

    # ----------------------------------------------------------- commands
    def pause(self) -> None:
        self._set(paused=True)

    def resume(self) -> None:
        self._set(paused=False)

    def stop(self) -> None:
        self._set(stop=True)

    def suspend(self, message: str = "") -> None:
        """End the run's thread between two steps without a final state ("suspended"): its folder keeps
        the last checkpoint, and a new Run on the folder continues from there (what a kill allows too)."""
        with self._lock:
            self._suspend = message
            self._wake.notify_all()

    def on_end(self, callback: Callable[[Run], None]) -> None:
        """Call `callback(run)` once the run's thread has ended, however it ended (after close())."""
        self._on_end.append(callback)

    def step_once(self) -> None:
        """One step while paused (ignored while running: the run is stepping anyway)."""
        with self._lock:
            if self._paused:
                self._pending_steps += 1
                self._wake.notify_all()

    def _set(self, **flags) -> None:
        with self._lock:
            self._paused = flags.get("paused", self._paused)
            self._stop = flags.get("stop", self._stop)
            self._wake.notify_all()

    def submit(self, fn: Callable[[], object]) -> Future:
        """Apply `fn` between two steps (by the run thread) or now (no run thread); its result in a Future."""
        future: Future = Future()
        with self._lock:
            if self._accepting:
                self._commands.append((fn, future))
                self._wake.notify_all()
                return future
        self._apply(fn, future)
        return future

    def select_layer(self, space: int) -> Future:
        """Checked now (a space that has not finished is refused at once), applied between steps."""
        self.run.check_selectable(space)
        return self.submit(lambda: self.run.select_layer(space))

    def export(self, space: int | None = None) -> Future:
        return self.submit(lambda: self.run.export(space))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run's thread ends; True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self, timeout: float | None = None) -> None:
        """What RemoteController.close lets go (the run's process); a run in this process holds none."""

    # --------------------------------------------------------- run thread
    def _apply(self, fn: Callable, future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        with self._apply_lock:
            try:
                future.set_result(fn())
            except BaseException as exc:  # the caller's error, delivered through its future
                future.set_exception(exc)

    def _next_action(self):
        """("command", fn, future) | ("stop",) | ("step",) | ("rest",): what the run thread does next."""
        with self._lock:
            while True:
                if self._commands:
                    return ("command", *self._commands.popleft())
                if self._stop:
                    return ("stop",)
                if self._suspend is not None:
                    return ("suspend", self._suspend)
                if not self._paused:
                    return ("step",)
                if self._pending_steps:
                    self._pending_steps -= 1
                    return ("step",)
                if self.run.status != "paused":
                    return ("rest",)  # announce "paused" outside the lock, then wait here
                self._wake.wait()

    def _loop(self) -> None:
        try:
            self._in_turn(self.run.prepare)
            while True:
                action = self._next_action()
                if action[0] == "command":
                    self._apply(action[1], action[2])
                elif action[0] == "rest":
                    self.run.emit_state("paused")
                elif action[0] == "stop":
                    self.run.emit_state("stopped")
                    return
                elif action[0] == "suspend":
                    self.run.emit_state("suspended", action[1])
                    return
                else:
                    if self.run.status != "running":
                        self.run.emit_state("running")
                    if not self._step():
                        self.run.emit_state("finished")
                        return
        except Exception as exc:  # the run's thread must report, not die silently
            self.run.fail(exc)    # never raises, even when the log or run.json is what failed
        finally:
            # However the thread ends, the folder is given up and whoever waits on the run is told: a
            # failure in one of these steps must not skip the next (a device queue waits on the last).
            for cleanup in (self._drain, self.run.close, *(lambda cb=cb: cb(self.run) for cb in self._on_end)):
                try:
                    cleanup()
                except Exception as exc:  # noqa: BLE001
                    print(f"run {self.run.run_dir.name}: cleanup failed ({exc!r})", file=sys.stderr)

    def _step(self) -> bool:
        return self._in_turn(self.run.step)

    def _in_turn(self, work: Callable[[], object]):
        """Loading and steps take the device in turn with the runs this one is compared with (they may
        share models, whose hooks are not for two threads at once)."""
        if self._turns is None:
            return work()
        with self._turns.turn():
            return work()

    def _drain(self) -> None:
        """Commands queued while the run ended are applied here; later ones apply in their caller."""
        with self._lock:
            self._accepting = False
            left = list(self._commands)
            self._commands.clear()
        for fn, future in left:
            self._apply(fn, future)
