"""Weight files: sha256 check first, then `torch.load(weights_only=True)` (never unrestricted pickle)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from .proxy import ClassifierError

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_verified(path: str | Path, sha256_prefix: str, how_to_fix: str) -> Any:
    """Load `path` if its sha256 starts with `sha256_prefix`; otherwise one sentence naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"{path} does not exist; {how_to_fix}.")
    actual = file_sha256(path)
    if not actual.startswith(sha256_prefix.lower()):
        raise ClassifierError(f"{path} is corrupt or not the expected file (sha256 {actual[:16]}..., "
                              f"expected {sha256_prefix[:16]}...); {how_to_fix}.")
    return load_weights_only(path, how_to_fix)


def load_weights_only(path: str | Path, how_to_fix: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated zip, a pickle with code, a text file: all are "not a weight file"
        raise ClassifierError(f"{path} is not a readable weight file ({type(err).__name__}); {how_to_fix}.") from err
