"""Steps of several runs sharing one device, taken in turn.

Two runs compared side by side should grow together: each run's thread asks for a turn before a step,
and turns are served in the order they were asked for (a ticket lock), so a run that has just stepped
queues behind the one that was waiting, and neither can starve the other however their step times differ.
A paused run asks for nothing and holds nothing, so the other keeps stepping alone.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class Turns:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._issued = 0    # tickets handed out
        self._serving = 0   # the ticket whose turn it is

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._cond:
            ticket = self._issued
            self._issued += 1
            while ticket != self._serving:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._serving += 1
                self._cond.notify_all()
