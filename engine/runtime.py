"""Process-wide settings a launcher applies once at start-up (never at import)."""
from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator() -> bool:
    """Keep freed activation buffers in glibc's heap instead of returning them to the kernel.

    Each CPU forward allocates fresh multi-megabyte activations; with glibc's defaults every one is a
    new mmap whose pages the kernel must fault in and zero, which measured as more system time than
    compute (BENCHMARKS.md, "allocator"). One arena for every thread: with glibc's per-thread arenas the
    OpenMP and autograd threads' buffers lived in arenas whose heaps glibc unmapped and mapped again,
    which was a third of a DSA run's CPU, in system time (BENCHMARKS.md, "one arena"). Must run before the
    process's other threads first allocate. Returns False where glibc is not the allocator.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return (bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31))
                and bool(libc.mallopt(_M_ARENA_MAX, 1)))
    except (OSError, AttributeError):
        return False
