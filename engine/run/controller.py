"""Drive a Run on a background thread; start, pause, resume, single steps, stop and layer choice
may come from any thread. Pause and stop are flags read between steps, so nothing is lost."""
from __future__ import annotations

import threading

from .run import Run


class RunController:
    def __init__(self, run: Run):
        self.run = run
        self._cond = threading.Condition()
        self._paused = False
        self._stop = False
        self._pending_steps = 0
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> str:
        return self.run.state

    def start(self, paused: bool = False) -> None:
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("this run has already been started")
            self._paused = paused
            self._thread = threading.Thread(target=self._loop, name=f"run:{self.run.run_dir.name}", daemon=True)
            self._thread.start()

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def step_once(self) -> None:
        """One step while paused (ignored while running: the run is stepping anyway)."""
        with self._cond:
            if self._paused:
                self._pending_steps += 1
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def select_layer(self, space: int) -> None:
        with self._cond:  # not while a step is half done: the selection and export read run state
            self.run.select_layer(space)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run's thread ends; True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _next_action(self) -> str:
        with self._cond:
            while True:
                if self._stop:
                    return "stop"
                if not self._paused:
                    return "step"
                if self._pending_steps:
                    self._pending_steps -= 1
                    return "step"
                if self.run.state != "paused":
                    self.run.emit_state("paused")
                self._cond.wait()

    def _loop(self) -> None:
        try:
            self.run.prepare()
            while True:
                action = self._next_action()
                if action == "stop":
                    self.run.emit_state("stopped")
                    return
                if self.run.state != "running":
                    self.run.emit_state("running")
                with self._cond:
                    more = self.run.step()
                if not more:
                    self.run.emit_state("finished")
                    return
        except Exception as exc:  # the run's thread must report, not die silently
            self.run.fail(exc)
