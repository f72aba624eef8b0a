"""Who is writing a run folder: the writing process holds an flock on RUN_DIR/.lock while the run is live.

The kernel drops the lock when the process ends, however it ends, so a reader can tell a run that is
still going (lock held) from one that was killed mid-way (lock free, last state not final). A second
writer is refused instead of interleaving two runs' files.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".lock"
EXPORT_LOCK_NAME = ".export.lock"


class RunLock:
    def __init__(self, fd: int | None):
        self._fd = fd

    @classmethod
    def acquire(cls, run_dir: Path) -> "RunLock":
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"{run_dir} is being written by another run right now; wait for it to end "
                             "or stop it, then resume") from None
        except OSError:  # a file system without flock: run unguarded rather than not at all
            os.close(fd)
            return cls(None)
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def is_live(run_dir: Path) -> bool | None:
    """True while some process holds the folder's lock, False if none does, None if it cannot be told."""
    path = Path(run_dir) / LOCK_NAME
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)


@contextmanager
def folder_lock(folder: Path, timeout: float = 120.0) -> Iterator[None]:
    """Hold RUN_DIR/.export.lock: one export (and its zip) of a folder at a time, across threads and
    processes (every holder opens the file itself, so two threads of one process exclude each other
    too). Waits up to `timeout` seconds, then refuses with one sentence."""
    folder = Path(folder)
    fd = os.open(folder / EXPORT_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ValueError(f"another export of {folder.name} is still being written; try again "
                                     "in a moment") from None
                time.sleep(0.02)
            except OSError:
                break  # a file system without flock: unguarded rather than not at all
        yield
    finally:
        os.close(fd)
