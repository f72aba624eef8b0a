"""The exported set as one zip, written beside the export, and per-request copies of it for downloads.

The runs folder is never served by URL: a download is a copy of the zip in a folder of Gradio's cache
with a random name (what the page's Download button and the /download endpoint hand out)."""
from __future__ import annotations

import io
import secrets
import shutil
import zipfile
from pathlib import Path

from engine.run.durable import replacing

EXPORTED = ("synthetic.pt", "grid.png", "export.json", "images.pt", "labels.pt", "lr.pt")


def zip_export(folder: Path, journey=None, animation: bytes | None = None) -> Path:
    """FOLDER/export.zip holding synthetic.pt, DD-Ranking's images.pt/labels.pt(/lr.pt), grid.png,
    export.json, images/ and, when given, the journey strip (a PIL image) as journey.png and the saved
    previews step by step (GIF bytes) as journey.gif: written under
    a unique temporary name, fsynced, then renamed over the old zip (the caller holds the folder's
    export lock, so the files it reads are one export's)."""
    folder = Path(folder)
    target = folder / "export.zip"
    with replacing(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in EXPORTED:
            if (folder / name).is_file():
                zf.write(folder / name, name)
        if journey is not None:
            png = io.BytesIO()
            journey.save(png, format="PNG")
            zf.writestr("journey.png", png.getvalue())
        if animation is not None:
            zf.writestr("journey.gif", animation)
        images = folder / "images"
        if images.is_dir():
            for path in sorted(images.rglob("*")):
                if path.is_file():
                    zf.write(path, str(path.relative_to(folder)))
    return target


def download_name(run_name: str, space: int | None) -> str:
    """What a download is called: the run and the layer (1-based, as the page numbers them)."""
    return f"{run_name}-layer{space + 1}.zip" if space is not None else f"{run_name}.zip"


def download_copy(bundle: Path, cache_dir: str | Path, name: str = "export.zip") -> Path:
    """A copy of `bundle`, named `name`, in a fresh, randomly named folder of Gradio's cache (swept with
    the cache)."""
    folder = Path(cache_dir) / f"hpd-{secrets.token_hex(16)}"
    folder.mkdir(parents=True)
    target = folder / name
    shutil.copyfile(bundle, target)
    return target
