"""Steps of several runs sharing one device, taken in turn.

Two runs compared side by side should grow together: each run's thread asks for a turn before a step,
and turns are served in the order they were asked for (a ticket lock), so a run that has just stepped
queues behind the one that was waiting, and neither can starve the other however their step times differ.
A paused run asks for nothing and holds nothing, so the other keeps stepping alone. Given a
multiprocessing context, the lock lives in shared memory and serves runs in child processes too
(engine.run.remote); it is then passed to them when they start, as multiprocessing requires.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class Turns:
    def __init__(self, context=None) -> None:
        """`context`: a multiprocessing context, for runs in processes of their own; None: threads only."""
        if context is None:
            self._cond = threading.Condition()
            self._tickets = [0, 0]
        else:
            self._cond = context.Condition()
            self._tickets = context.Array("q", 2, lock=False)
        # [0]: tickets handed out; [1]: the ticket whose turn it is

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._cond:
            ticket = self._tickets[0]
            self._tickets[0] += 1
            while ticket != self._tickets[1]:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._tickets[1] += 1
                self._cond.notify_all()
