"""The page's pictures, written to Gradio's cache once each and whole, and sent as paths.

Gradio 6 writes a PIL value to its cache under the hash of its bytes, but in place every time the value
is sent (`processing_utils.save_pil_to_cache`): with two pages polling one run, one poll rewrote a grid
while another request was streaming that very file ("Too much data for declared Content-Length",
BENCHMARKS.md "Session 11"), and the page kept a broken image until the next change. Here a PIL value is
written under its own content's hash, to a temporary name renamed into place, and only if it is not there
yet; the page's image outputs get its path, which Gradio serves as it is. (Not a gr.Image subclass:
Gradio writes a .pyi stub beside the source of every component class it sees defined.)
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

from PIL import Image


def write_once(image: Image.Image | None, cache_dir: str | Path) -> str | None:
    """The path of `image` as a PNG under `cache_dir`, written if absent: never rewritten while served."""
    if image is None:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    folder = Path(cache_dir) / f"hpd-{hashlib.sha256(data).hexdigest()}"
    path = folder / "image.png"
    try:
        os.utime(path)  # sent again: made younger than the cache's sweep (delete_cache ages files by time)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(dir=folder, prefix=".image.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
    return str(path)
