"""One job computes per device at a time; the others wait in order and show their place in line.

A job is one run, or a group of runs submitted together (a comparison): a group takes the device as one,
its runs start at once and step in turn (engine.Turns), and the device is free once each has released it.
"""
from __future__ import annotations

import threading
from typing import Protocol


class Launchable(Protocol):
    device: str

    def launch(self) -> None: ...


class _Group:
    """Runs that hold one device together."""

    def __init__(self, jobs: list[Launchable], queue: "DeviceQueue"):
        self.jobs, self.device, self._queue = list(jobs), jobs[0].device, queue

    def launch(self) -> None:
        failed = None
        for job in list(self.jobs):
            try:
                job.launch()
            except Exception as exc:  # noqa: BLE001 - the others still start; the device is freed by all
                self._queue.release(job)
                failed = failed or exc
        if failed is not None:
            raise failed


class DeviceQueue:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, Launchable] = {}
        self._waiting: dict[str, list[Launchable]] = {}
        self._group_of: dict[int, _Group] = {}  # id(run) -> its group, until the run releases the device
        self._left: dict[int, set[int]] = {}    # id(group) -> ids of its runs that still hold the device

    def submit(self, job: Launchable) -> None:
        self._enqueue(job)

    def submit_together(self, jobs: list[Launchable]) -> None:
        """Queue `jobs` (all on one device) as one: they start at the same time."""
        if len({j.device for j in jobs}) != 1:
            raise ValueError("runs compared together must use the same device")
        group = _Group(jobs, self)
        with self._lock:
            for job in jobs:
                self._group_of[id(job)] = group
            self._left[id(group)] = {id(j) for j in jobs}
        self._enqueue(group)

    def _enqueue(self, job: Launchable) -> None:
        with self._lock:
            free = job.device not in self._active
            if free:
                self._active[job.device] = job
            else:
                self._waiting.setdefault(job.device, []).append(job)
        if free:
            self._launch(job)

    def _launch(self, job: Launchable) -> None:
        try:
            job.launch()
        except Exception:  # noqa: BLE001 - a job that cannot start must not hold the device
            self._release_unit(job)
            raise

    def release(self, job: Launchable) -> None:
        """The run is done with its device (finished, failed, stopped or suspended): once its group, if
        any, is done too, start the next in line."""
        with self._lock:
            group = self._group_of.pop(id(job), None)
            if group is not None:
                left = self._left.get(id(group), set())
                left.discard(id(job))
                if left:
                    return
                self._left.pop(id(group), None)
                job = group
        self._release_unit(job)

    def _release_unit(self, job: Launchable) -> None:
        with self._lock:
            if self._active.get(job.device) is not job:
                return
            line = self._waiting.get(job.device) or []
            nxt = line.pop(0) if line else None
            if nxt is None:
                del self._active[job.device]
            else:
                self._active[job.device] = nxt
        if nxt is not None:
            self._launch(nxt)

    def cancel(self, job: Launchable) -> bool:
        """Take a waiting run out of the line (out of its group, if it waits in one); False if it is not
        waiting."""
        with self._lock:
            line = self._waiting.get(job.device, [])
            if job in line:
                line.remove(job)
                return True
            group = self._group_of.get(id(job))
            if group is None or group not in line:
                return False
            group.jobs.remove(job)
            del self._group_of[id(job)]
            self._left[id(group)].discard(id(job))
            if not group.jobs:
                line.remove(group)
                del self._left[id(group)]
            return True

    def waiting(self, device: str | None = None) -> int:
        """How many runs wait (for `device`, or for any device)."""
        with self._lock:
            lines = [self._waiting.get(device, [])] if device is not None else list(self._waiting.values())
            return sum(len(j.jobs) if isinstance(j, _Group) else 1 for line in lines for j in line)

    def position(self, job: Launchable) -> int | None:
        """1 for the next to start; None when not waiting."""
        with self._lock:
            line = self._waiting.get(job.device, [])
            unit = self._group_of.get(id(job), job)
            return line.index(unit) + 1 if unit in line else None
