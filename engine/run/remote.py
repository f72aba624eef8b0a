"""A Run in a child process of its own, driven from this process as a RunController drives a local one.

A server that computes its runs in its own threads makes every poll of a page cost twice: the handler's
Python time, and the run thread's wait for the GIL the handler holds (BENCHMARKS.md, "Studio": a page
took 0.21-0.24 of a run's core). Here the Run and its RunController live in a child process; commands go
down a pipe and the run's events come back up it, to subscribers in this process (RemoteRun.bus), and the
child writes the run folder itself as any run does.

Children are forked from multiprocessing's forkserver, which has imported the engine once, so a start
costs a fork, not an interpreter and torch's import. The forkserver is one per process by multiprocessing's
design, the one piece of process-wide state here; `warm_up()` starts it ahead of the first run.
"""
from __future__ import annotations

import itertools
import multiprocessing
import pickle
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

from .config import RunConfig
from .events import ErrorEvent, Event, StateEvent
from .run import check_selectable

# Imported by the forkserver before it forks any run or evaluation (hpd_app.evaluation): what their set-up
# would import anyway (not engine.cam: grad-cam pulls in OpenCV and SciPy, and the CAMs are the server's).
PRELOAD = ["engine.run.remote", "engine.run.context", "engine.generators", "engine.classifiers",
           "engine.objectives", "engine.distance", "engine.suite"]
JOIN_S = 10.0  # how long the child gets to exit after its last message before it is called failed


def context():
    """The forkserver context runs are started from (POSIX), its preload set once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def warm_up() -> None:
    """Start the forkserver now, in the background, so the first run does not wait for its imports."""
    from multiprocessing import forkserver

    context()
    threading.Thread(target=forkserver.ensure_running, name="forkserver-warm-up", daemon=True).start()


class _Subscribers:
    """The `bus` of a RemoteRun: subscribe() as on a Run's EventBus; events arrive already stamped."""

    def __init__(self) -> None:
        self._fns: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        with self._lock:
            self._fns.append(fn)
        return lambda: self._fns.remove(fn) if fn in self._fns else None

    def deliver(self, event: Event) -> None:
        with self._lock:
            fns = list(self._fns)
        for fn in fns:
            try:
                fn(event)
            except Exception as exc:  # noqa: BLE001 - one broken subscriber must not starve the others
                print(f"event subscriber {fn!r} failed on a {event.kind.value} event: {exc!r}", file=sys.stderr)


class RemoteRun:
    """What this process knows of a run in a child: its config and folder, its status, its events."""

    def __init__(self, config: RunConfig, run_dir: str | Path, *, owner: str | None = None):
        self.config, self.run_dir, self.owner = config, Path(run_dir), owner
        self.bus = _Subscribers()
        self.status = "created"
        self.spaces_done = 0

    def check_selectable(self, space: int) -> None:
        check_selectable(space, self.spaces_done)

    def _receive(self, event: Event, spaces_done: int) -> None:
        self.spaces_done = spaces_done
        if isinstance(event, StateEvent):
            self.status = event.state
        self.bus.deliver(event)


class RemoteController:
    """RunController's commands for a RemoteRun; each returns at once (layer choices and exports as
    Futures, answered by the child between two steps)."""

    def __init__(self, run: RemoteRun, turns=None, *, threads: int | None = None):
        """`turns`: a Turns made with context() (shared with the runs this one is compared with);
        `threads`: the child's torch threads (default: this process's)."""
        self.run, self._turns, self._threads = run, turns, threads
        self._conn = None
        self._process = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._ids = itertools.count()
        self._futures: dict[int, Future] = {}
        self._on_end: list[Callable[[RemoteRun], None]] = []
        self._ended_event = threading.Event()

    @property
    def state(self) -> str:
        return self.run.status

    def on_end(self, callback: Callable[[RemoteRun], None]) -> None:
        self._on_end.append(callback)

    def start(self, paused: bool = False) -> None:
        if self._process is not None:
            raise RuntimeError("this run has already been started")
        import torch

        ctx = context()
        ours, theirs = ctx.Pipe()
        r = self.run
        self._process = ctx.Process(target=_child_main, name=f"run:{r.run_dir.name}", daemon=True, args=(
            r.config, str(r.run_dir), r.owner, theirs, self._turns, paused, self._threads or torch.get_num_threads()))
        try:
            self._process.start()
        except Exception as exc:  # noqa: BLE001 - no forkserver, no memory for a fork: a failed run, said so
            self._ended(None, f"the run's process could not start ({exc})")
            return
        finally:
            theirs.close()
        self._conn = ours
        self._reader = threading.Thread(target=self._read, name=f"remote:{r.run_dir.name}", daemon=True)
        self._reader.start()

    # ----------------------------------------------------------- commands
    def pause(self) -> None:
        self._send(("pause",))

    def resume(self) -> None:
        self._send(("resume",))

    def stop(self) -> None:
        self._send(("stop",))

    def step_once(self) -> None:
        self._send(("step",))

    def suspend(self, message: str = "") -> None:
        self._send(("suspend", message))

    def select_layer(self, space: int) -> Future:
        """Checked now against the spaces the child has reported finished, applied between steps."""
        self.run.check_selectable(space)
        return self._ask("select", space)

    def export(self, space: int | None = None) -> Future:
        return self._ask("export", space)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run has ended and every end callback has run; True if it has."""
        return self._process is None or self._ended_event.wait(timeout)

    def close(self, timeout: float = JOIN_S) -> None:
        """Let the child go: a run still going stops between two steps (its folder keeps the last
        checkpoint), and a finished one's process, kept for layer choices and exports, exits."""
        self._send(("close",))
        if self._reader is not None:
            self._reader.join(timeout)

    def _ask(self, what: str, arg) -> Future:
        future: Future = Future()
        ident = next(self._ids)
        self._futures[ident] = future
        if not self._send((what, ident, arg)):
            self._futures.pop(ident, None)
            future.set_exception(ValueError("the run has ended; open its folder to choose or export a layer"))
        return future

    def _send(self, message: tuple) -> bool:
        """False when the child is gone (its end is being reported by the reader)."""
        if self._conn is None:
            return False
        try:
            with self._send_lock:
                self._conn.send_bytes(pickle.dumps(message))
            return True
        except (OSError, ValueError):
            return False

    # ------------------------------------------------------------ reader
    def _read(self) -> None:
        """Events, answers and the run's end, until the child exits (after its end when it is closed)."""
        try:
            while True:
                try:
                    message = pickle.loads(self._conn.recv_bytes())
                except (EOFError, OSError):
                    break
                if message[0] == "event":
                    self.run._receive(message[1], message[2])
                elif message[0] == "reply":
                    self._answer(*message[1:])
                elif message[0] == "end":
                    self._ended(message[1])
        finally:
            self._process.join(JOIN_S)
            with self._send_lock:
                self._conn.close()
            if not self._ended_event.is_set():
                self._ended(None)
            for future in list(self._futures.values()):
                future.set_exception(ValueError("the run's process has ended; open its folder to choose or "
                                                "export a layer"))
            self._futures.clear()

    def _answer(self, ident: int, ok: bool, value) -> None:
        future = self._futures.pop(ident, None)
        if future is not None:
            future.set_result(value) if ok else future.set_exception(ValueError(value))

    def _ended(self, final: str | None, message: str = "") -> None:
        if final is None:  # killed, or out of memory: say so as a local run's failure would
            code = self._process.exitcode
            reason = (f"signal {-code}" if code is not None and code < 0 else f"exit code {code}" if code is not None
                      else "it did not answer")
            message = message or (f"the run's process ended unexpectedly ({reason}); its folder keeps every "
                                  "finished layer and the run can be continued from it")
            self.run._receive(ErrorEvent(message, "", source="run"), self.run.spaces_done)
            self.run._receive(StateEvent("failed", message), self.run.spaces_done)
            final = "failed"
        self.run.status = final
        for callback in self._on_end:
            try:
                callback(self.run)
            except Exception as exc:  # noqa: BLE001 - every callback runs, as RunController's do
                print(f"run {self.run.run_dir.name}: end callback failed ({exc!r})", file=sys.stderr)
        self._ended_event.set()


# ---------------------------------------------------------------- the child
def _child_main(config: RunConfig, run_dir: str, owner: str | None, conn, turns, paused: bool, threads: int) -> None:
    """The run, its controller and the command loop, in the child. Once the run has ended the process
    stays for layer choices and exports until it is closed (a suspended run's exits at once); the parent
    going away (its end of the pipe closes) stops the run between two steps, the folder keeps the last
    checkpoint."""
    import torch

    from ..runtime import tune_allocator
    from .controller import RunController
    from .run import Run

    tune_allocator()
    torch.set_num_threads(threads)
    lock = threading.Lock()

    def send(message: tuple) -> None:
        data = pickle.dumps(message)
        with lock:
            conn.send_bytes(data)

    run = Run(config, run_dir, owner=owner)
    # Sent from the thread that emits, so the count of finished spaces is the one this event saw.
    run.bus.subscribe(lambda event: send(("event", event, run.spaces_done)))
    controller = RunController(run, turns)
    ended = threading.Event()
    controller.on_end(lambda r: ended.set())
    controller.start(paused=paused)
    told = False
    while True:
        if ended.is_set() and not told:
            _tell(send, ("end", run.status))
            told = True  # once: a parent that has gone cannot be told again either
            if run.status == "suspended":
                break
        try:
            if not conn.poll(0.25):
                continue
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            message = ("close",)
        if message[0] == "close":
            controller.stop()
            controller.wait()
            break
        _apply(controller, message, send)
    if not told:
        _tell(send, ("end", run.status))
    conn.close()


def _tell(send: Callable[[tuple], None], message: tuple) -> None:
    """Send, whether or not the parent is still there to read it (a closed pipe is not the child's error)."""
    try:
        send(message)
    except (OSError, ValueError):
        pass


def _apply(controller, message: tuple, send: Callable[[tuple], None]) -> None:
    what = message[0]
    if what in ("select", "export"):
        ident, arg = message[1], message[2]

        def answer(future: Future) -> None:
            exc = future.exception()
            _tell(send, ("reply", ident, exc is None, future.result() if exc is None else str(exc)))
        try:
            future = controller.select_layer(arg) if what == "select" else controller.export(arg)
        except ValueError as exc:
            future = Future()
            future.set_exception(exc)
        future.add_done_callback(answer)
    elif what == "suspend":
        controller.suspend(message[1])
    else:
        {"pause": controller.pause, "resume": controller.resume, "stop": controller.stop,
         "step": controller.step_once}[what]()
