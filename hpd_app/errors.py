"""What a client is told when something goes wrong: one sentence, no server paths, no traceback (the
traceback goes to the server log)."""
from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger("hpd_app")

INTERNAL = "the server could not complete this request (an internal error; the server log has the details)"
# An absolute path: a slash that does not follow a word character (so "a/b" and "4/5" are left alone).
_ABSOLUTE = re.compile(r"(?<![\w.~-])/[^\s'\"`,;()\[\]<>]+")


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def public_message(text: str, runs_dir: Path | None = None) -> str:
    """The first line of `text`; the runs folder by its name only, other absolute paths cut to their
    last component."""
    line = first_line(text)
    if runs_dir is not None:
        name = Path(runs_dir).resolve().name
        for base in sorted({str(Path(runs_dir)), str(Path(runs_dir).resolve())}, key=len, reverse=True):
            if base not in ("", ".", "/"):
                line = line.replace(base.rstrip("/"), name)
    return _ABSOLUTE.sub(_shorten, line)


def _shorten(match: re.Match) -> str:
    path = match.group(0)
    tail = ""
    while path and path[-1] in ".:":
        path, tail = path[:-1], path[-1] + tail
    name = Path(path).name
    return (f".../{name}" if name else "...") + tail


def user_message(exc: BaseException, runs_dir: Path | None = None) -> str:
    """Our own errors (ValueError, LookupError) as one clean sentence; anything else as INTERNAL, logged."""
    if isinstance(exc, (ValueError, LookupError)):
        return public_message(str(exc), runs_dir) or type(exc).__name__
    log.error("request failed", exc_info=exc)
    return INTERNAL


def public_snapshot(snap, runs_dir: Path | None = None):
    """The snapshot as a client may see it: its message and warnings cleaned (paths, extra lines)."""
    from dataclasses import replace
    return replace(snap, message=public_message(snap.message, runs_dir),
                   warnings=tuple(public_message(w, runs_dir) for w in snap.warnings))
