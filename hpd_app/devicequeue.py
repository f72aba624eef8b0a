"""One run computes per device at a time; the others wait in order and show their place in line."""
from __future__ import annotations

import threading
from typing import Protocol


class Launchable(Protocol):
    device: str

    def launch(self) -> None: ...


class DeviceQueue:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, Launchable] = {}
        self._waiting: dict[str, list[Launchable]] = {}

    def submit(self, job: Launchable) -> None:
        with self._lock:
            free = job.device not in self._active
            if free:
                self._active[job.device] = job
            else:
                self._waiting.setdefault(job.device, []).append(job)
        if free:
            try:
                job.launch()
            except Exception:  # noqa: BLE001
                self.release(job)
                raise

    def release(self, job: Launchable) -> None:
        """The job is done with its device (finished, failed or stopped): start the next in line."""
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
            try:
                nxt.launch()
            except Exception:  # noqa: BLE001 - a job that cannot start must not hold the device
                self.release(nxt)
                raise

    def cancel(self, job: Launchable) -> bool:
        """Take a waiting job out of the line; False if it is not waiting."""
        with self._lock:
            line = self._waiting.get(job.device, [])
            if job in line:
                line.remove(job)
                return True
            return False

    def waiting(self, device: str | None = None) -> int:
        """How many jobs wait (for `device`, or for any device)."""
        with self._lock:
            if device is not None:
                return len(self._waiting.get(device, []))
            return sum(len(line) for line in self._waiting.values())

    def position(self, job: Launchable) -> int | None:
        """1 for the next to start; None when not waiting."""
        with self._lock:
            line = self._waiting.get(job.device, [])
            return line.index(job) + 1 if job in line else None
