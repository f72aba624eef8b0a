"""A run's saved previews (engine/run/export.py writes one PNG per preview step under RUN_DIR/previews):
read back for the step scrubber, and played in order as the export's journey.gif."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from . import render
from .snapshot import Snapshot

GIF_FRAMES = 120       # at most this many frames, evenly spread over the run's previews
GIF_FRAME_MS = 250
GIF_LAST_MS = 2000     # the last frame (the run's end) stays up longer


def open_preview(run_dir: Path, path: str) -> Image.Image:
    """A saved preview PNG of a run, named as its events name it; nothing outside RUN_DIR/previews."""
    folder = (Path(run_dir) / "previews").resolve()
    target = (Path(run_dir) / str(path)).resolve()
    if target.parent != folder or target.suffix != ".png":
        raise ValueError(f"{str(path)[:80]!r} is not one of this run's previews")
    with Image.open(target) as image:
        image.load()
        return image


def _frame(run_dir: Path, snap: Snapshot, entry) -> Image.Image:
    _, space, step, path = entry
    tiles = render.preview_tiles(open_preview(run_dir, path), len(snap.class_names), snap.ipc)
    frame = render.grid(tiles, snap.class_names, snap.ipc)
    layer = snap.layers[space] if space < len(snap.layers) else str(space)
    ImageDraw.Draw(frame).text((4, 4), f"layer {space + 1} of {len(snap.layers)} ({layer}), step {step}",
                               fill="black")
    return frame


def journey_gif(run_dir: Path, snap: Snapshot) -> bytes | None:
    """The run's saved previews in step order as an animated GIF (None without previews); previews that
    cannot be read (removed, damaged) are left out."""
    entries = list(snap.previews)
    if not entries or not snap.class_names:
        return None
    if len(entries) > GIF_FRAMES:
        entries = [entries[round(i * (len(entries) - 1) / (GIF_FRAMES - 1))] for i in range(GIF_FRAMES)]
    frames = []
    for entry in entries:
        try:
            frames.append(_frame(run_dir, snap, entry))
        except Exception:  # noqa: BLE001 - one bad file must not cost the export
            continue
    if not frames:
        return None
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], loop=0,
                   duration=[GIF_FRAME_MS] * (len(frames) - 1) + [GIF_LAST_MS])
    return out.getvalue()
