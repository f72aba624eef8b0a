"""Who owns a run: a token the server issued (or one a client chose, if it is long and random enough),
else the client's session. Tokens and session keys live in separate namespaces, and only a sha256 of
the namespaced key is kept (in memory and in each run folder's run.json): never the token itself."""
from __future__ import annotations

import hashlib
import re
import secrets

TOKEN_MIN_CHARS = 16
TOKEN_MAX_CHARS = 256
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_CLASSES = (re.compile(r"[a-z]"), re.compile(r"[A-Z]"), re.compile(r"[0-9]"), re.compile(r"[_-]"))


def new_token() -> str:
    """A fresh owner token (32 URL-safe characters, 192 random bits)."""
    return secrets.token_urlsafe(24)


def token_problem(token: str) -> str | None:
    """Why `token` cannot own runs (None if it can): short, odd characters, or plainly not random."""
    if not isinstance(token, str) or not TOKEN_MIN_CHARS <= len(token) <= TOKEN_MAX_CHARS:
        return f"must be {TOKEN_MIN_CHARS} to {TOKEN_MAX_CHARS} characters long"
    if not _TOKEN_CHARS.fullmatch(token):
        return "may hold only letters, digits, '-' and '_'"
    if len(set(token)) < 10 or sum(bool(c.search(token)) for c in _CLASSES) < 2:
        return "does not look random (too few different characters)"
    return None


def check_token(token: str) -> None:
    problem = token_problem(token)
    if problem is not None:
        raise ValueError(f"this token cannot own runs: a token {problem}; leave it empty to use your "
                         "session, or ask the server for one (/new_token)")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_owner(token: str) -> str:
    check_token(token)
    return _digest(f"token:{token}")


def session_owner(session_hash: str) -> str:
    return _digest(f"session:{session_hash}")
