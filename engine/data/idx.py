"""Reader for the IDX format of MNIST-style datasets (plain or gzip-compressed)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .base import DatasetError

# The third magic byte names the element type; Fashion-MNIST only uses unsigned bytes.
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file into an array of its declared shape; any defect raises DatasetError."""
    path = Path(path)
    try:
        raw = _read_bytes(path)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path} cannot be read ({exc}); replace it with an intact copy.") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number); replace it with an intact copy.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path} is truncated inside its header; replace it with an intact copy.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path} holds {len(raw) - header} data bytes but its header promises {expected} "
            f"(shape {shape}); the file is truncated or corrupt: replace it with an intact copy."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as fh:
        return fh.read()
