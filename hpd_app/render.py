"""Pictures and text of snapshots: class-labelled grids, the distance/loss chart, the timeline line.
Pure functions of their inputs, in memory (PIL, numpy, matplotlib's OO API on Agg; no pyplot state)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from .snapshot import TERMINAL, Snapshot

CELL = 96          # pixels per image in the grid (small images are upscaled, nearest neighbour)
BAND = 30          # blank band on top: Gradio's label badge and toolbar icons sit there, over nothing
HEADER = BAND + 16  # the band, then a line of class names: no label is ever covered
COLORS = {"hpd": "#d62728", "glad": "#1f77b4", "pixel": "#2ca02c"}


@functools.lru_cache(maxsize=8)  # loading the font is most of a label's cost; one per size is enough
def _font(size: int = 11) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the bitmap font takes no size
        return ImageFont.load_default()


@dataclass(frozen=True)
class Layout:
    """The sizes of a grid or strip drawn `cell` px per image. A zoomed picture is shrunk back to its
    column by the page (it is shown full size in the full-screen view), so the band, the labels and the
    class-name column grow with the cell: at any zoom nothing covers a label and the text stays readable."""
    cell: int = 96

    def _px(self, base: int) -> int:
        return round(base * self.cell / CELL)

    @property
    def band(self) -> int:
        return self._px(BAND)

    @property
    def header(self) -> int:
        return self._px(HEADER)

    @property
    def left(self) -> int:
        return self._px(JOURNEY_LEFT)

    @property
    def head(self) -> int:
        return self._px(JOURNEY_HEAD)

    def font(self) -> ImageFont.ImageFont:
        return _font(self._px(11))


def grid(images: Sequence[np.ndarray] | np.ndarray, class_names: Sequence[str], ipc: int,
         cell: int = CELL) -> Image.Image:
    """Columns are classes (named on top), rows the images per class; images are class-major uint8 HxWxC,
    each drawn `cell` px wide (the page's zoom)."""
    n_classes = max(1, len(class_names))
    rows = max(1, ipc)
    lay = Layout(cell)
    canvas = Image.new("RGB", (n_classes * cell, lay.header + rows * cell), "white")
    draw, font = ImageDraw.Draw(canvas), lay.font()
    for c, name in enumerate(class_names):
        draw.text((c * cell + 2, lay.band + 2), name[:15], fill="black", font=font)
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        tile = Image.fromarray(arr).convert("RGB").resize((cell - 2, cell - 2), Image.NEAREST)
        canvas.paste(tile, ((i // rows) * cell + 1, lay.header + (i % rows) * cell + 1))
    return canvas


JOURNEY_LEFT = 92      # the class-name column of the journey strip
JOURNEY_HEAD = BAND + 30  # the band, then a layer's name and how much it changed the set


def layer_changes(views) -> list[float | None]:
    """Mean absolute pixel change (0-1 scale) of each layer's kept images from the previous layer's."""
    out, prev = [], None
    for v in views:
        cur = None if v.images is None else v.images.astype(np.float32) / 255
        out.append(None if prev is None or cur is None or prev.shape != cur.shape else float(np.abs(cur - prev).mean()))
        prev = cur
    return out


def _journey_columns(snap: Snapshot, diffs: bool, overlays) -> list[tuple[str, str, np.ndarray, bool]]:
    """(title, subtitle, images, framed) per column: the finished layers, then the layer in progress."""
    views = [v for v in sorted(snap.spaces, key=lambda v: v.index) if v.images is not None]
    cols = []
    for col, (view, change) in enumerate(zip(views, layer_changes(views))):
        images = view.images
        if diffs and col > 0 and views[col - 1].images is not None:
            d = np.abs(images.astype(np.int16) - views[col - 1].images.astype(np.int16))
            images = np.clip(d * 4, 0, 255).astype(np.uint8)  # x4: small changes must show
        elif overlays and view.index in overlays:
            images = np.stack(overlays[view.index])
        cols.append((f"{view.index + 1}: {view.name}", "start" if change is None else f"change {change:.3f}",
                     images, view.index == snap.selected_space))
    finished = {v.index for v in views}
    if snap.state not in TERMINAL and snap.preview is not None and snap.space not in finished and not diffs:
        cols.append((f"now: layer {snap.space + 1}", f"step {snap.step}", np.asarray(snap.preview), False))
    return cols


def journey(snap: Snapshot, diffs: bool = False, overlays: dict | None = None, cell: int = CELL) -> Image.Image | None:
    """The whole journey at once: a column per finished layer (pixel space last) and, while the run goes
    on, the current layer's latest preview; a row per class (its first image); the selected layer framed.
    `diffs` shows |layer k - layer k-1| (brightened) instead; `overlays` {space: CAM overlay images}
    replaces a finished layer's images by their CAM."""
    cols = _journey_columns(snap, diffs, overlays)
    if not cols or not snap.class_names:
        return None
    n_classes, ipc = len(snap.class_names), max(1, snap.ipc)
    lay = Layout(cell)
    left, head = lay.left, lay.head
    canvas = Image.new("RGB", (left + len(cols) * cell, head + n_classes * cell), "white")
    draw, font = ImageDraw.Draw(canvas), lay.font()
    for c, name in enumerate(snap.class_names):
        draw.text((2, head + c * cell + cell // 2 - lay._px(6)), name[:14], fill="black", font=font)
    for col, (title, subtitle, images, framed) in enumerate(cols):
        x = left + col * cell
        draw.text((x + 2, lay.band + 1), title[:15], fill="black", font=font)
        draw.text((x + 2, lay.band + lay._px(15)), subtitle, fill="#555555", font=font)
        for c in range(min(n_classes, len(images) // ipc)):
            arr = images[c * ipc]
            arr = arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
            tile = Image.fromarray(arr).convert("RGB").resize((cell - 2, cell - 2), Image.NEAREST)
            canvas.paste(tile, (x + 1, head + c * cell + 1))
        if framed:
            draw.rectangle([x, head, x + cell - 1, head + n_classes * cell - 1], outline="#d62728", width=lay._px(3))
    return canvas


def journey_column(snap: Snapshot, x: int, cell: int = CELL) -> int | None:
    """The layer (space index) of the strip's finished column at image x; None left of the columns and
    on the column of the layer in progress."""
    views = [v for v in sorted(snap.spaces, key=lambda v: v.index) if v.images is not None]
    left = Layout(cell).left
    col = (x - left) // cell
    return views[col].index if x >= left and 0 <= col < len(views) else None


PREVIEW_PAD = 2  # engine/run/export.py saves previews with torchvision's make_grid, padding 2


def preview_tiles(png: Image.Image, n_classes: int, ipc: int) -> list[np.ndarray]:
    """The images of a saved preview PNG, class-major: one row of classes at IPC 1, else a row per class
    with its `ipc` images (the layout save_preview writes)."""
    n = n_classes * ipc
    per_row = ipc if ipc > 1 else n_classes
    rows = -(-n // per_row)
    arr = np.asarray(png.convert("RGB"))
    w = (arr.shape[1] - PREVIEW_PAD) // per_row - PREVIEW_PAD
    h = (arr.shape[0] - PREVIEW_PAD) // rows - PREVIEW_PAD
    if w < 1 or h < 1:
        raise ValueError(f"a {arr.shape[1]}x{arr.shape[0]} preview cannot hold {n} images")
    out = []
    for i in range(n):
        r, c = divmod(i, per_row)
        y, x = PREVIEW_PAD + r * (h + PREVIEW_PAD), PREVIEW_PAD + c * (w + PREVIEW_PAD)
        out.append(arr[y:y + h, x:x + w])
    return out


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def timeline(snap: Snapshot, queue_position: int | None = None) -> str:
    """'layer 5 of 12: b16.conv0 16x16x128, step 14/20 · 12.3 s · 1.6 steps/s' plus the state."""
    head = f"**{snap.label}** `{snap.run_id}` · {snap.state}"
    if snap.state == "queued":
        return f"{head} (position {queue_position or 1} in line for the device)"
    parts = [head]
    if snap.layers:
        k = min(snap.space, len(snap.layers) - 1)
        parts.append(f"layer {k + 1} of {len(snap.layers)}: {snap.layers[k]}, step {snap.step}/{snap.steps_per_space}")
        parts.append(f"{snap.steps_done}/{snap.total_steps} steps")
    parts.append(f"{snap.elapsed_s:.1f} s")
    parts.append(f"{snap.steps_per_s:.2f} steps/s")
    left = snap.total_steps - snap.steps_done
    if snap.state in ("running", "pausing") and snap.steps_per_s > 0 and left > 0:
        parts.append(f"about {_duration(left / snap.steps_per_s)} left")  # from the measured step time
    if snap.selected_space is not None:
        acc = _accuracy(snap, snap.selected_space)
        parts.append(f"selected layer {snap.selected_space + 1} ({snap.selection_reason}){acc}")
    text = " · ".join(parts)
    if snap.message and snap.state in ("failed", "running", "pausing", "paused", "stopping", "stopped", "interrupted",
                                       "suspended"):
        text += f"\n\n{'**Error:** ' if snap.state == 'failed' else ''}{snap.message}"
    for warning in snap.warnings:
        text += f"\n\n**Warning:** {warning}"
    return text


def _accuracy(snap: Snapshot, space: int) -> str:
    view = next((v for v in snap.spaces if v.index == space), None)
    return "" if view is None or view.accuracy is None else f", held-out accuracy {100 * view.accuracy:.1f}%"


def layer_caption(snap: Snapshot, space: int) -> str:
    view = next((v for v in snap.spaces if v.index == space), None)
    if view is None:
        return "No finished layer yet."
    dist = "-" if view.best_distance is None else f"{view.best_distance:.4g}"
    chosen = " · **the run's selection**" if snap.selected_space == space else ""
    return (f"Layer {space + 1} of {len(snap.layers)}: `{view.name}` · kept step {view.best_step} · "
            f"distance {dist}{_accuracy(snap, space)}{chosen}")


def chart(snaps: Sequence[Snapshot], cursor: int | None = None) -> Figure:
    """Distance (left axis) and loss (right, dashed) per step; dotted lines at layer boundaries; each
    layer's kept minimum marked; `cursor`: the step the scrubber shows, a solid line. Several runs share
    the axes (Compare)."""
    # As wide as the page's column (960 px at 80 dpi), so it is drawn at its size, not scaled; margins
    # fixed (constrained layout is slow) and wide enough for both axis labels.
    fig = Figure(figsize=(12.0, 3.6), dpi=80)
    fig.subplots_adjust(left=0.07, right=0.93, bottom=0.14, top=0.97)
    ax = fig.add_subplot()
    ax_loss = ax.twinx()
    ax.set_xlabel("step")
    ax.set_ylabel("class-relevant distance")
    ax_loss.set_ylabel("loss")
    for snap in snaps:
        _draw_run(ax, ax_loss, snap)
    if not any(p.distance is not None for s in snaps for p in s.curve):
        ax.set_ylabel("distance (not measured)")
    if snaps and snaps[0].steps_per_space:
        for k in range(1, len(snaps[0].layers)):
            ax.axvline(k * snaps[0].steps_per_space, color="0.7", linestyle=":", linewidth=1)
    if cursor is not None:
        ax.axvline(cursor, color="black", linewidth=1.2, alpha=0.7, label="scrubbed step")
    handles = ax.get_legend_handles_labels()[0] + ax_loss.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8)
    return fig


def _draw_run(ax, ax_loss, snap: Snapshot) -> None:
    color = COLORS.get(snap.method, "black")
    dist = [(p.x, p.distance) for p in snap.curve if p.distance is not None]
    loss = [(p.x, p.loss) for p in snap.curve if p.loss is not None]
    if dist:
        # Markers: a curve of one point (step 0, before the first step ends) is visible too.
        ax.plot(*zip(*dist), color=color, linewidth=1.5, marker="o", markersize=2.5, label=f"{snap.label} distance")
    if loss:
        ax_loss.plot(*zip(*loss), color=color, linewidth=1, linestyle="--", alpha=0.6, label=f"{snap.label} loss")
    marks = [(v.index * snap.steps_per_space + (v.best_step or 0), v.best_distance)
             for v in snap.spaces if v.best_distance is not None]
    if marks:
        ax.scatter(*zip(*marks), color=color, marker="v", s=36, zorder=3, label=f"{snap.label} kept minimum")


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's on the ranks); None under 3 points or with a constant side."""
    if len(xs) < 3 or len(xs) != len(ys):
        return None
    rx, ry = np.asarray(_ranks(xs)), np.asarray(_ranks(ys))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float(np.sqrt((rx ** 2).sum() * (ry ** 2).sum()))
    return None if denom == 0 else float((rx * ry).sum() / denom)


def distance_vs_accuracy(snap: Snapshot) -> tuple[Figure | None, str]:
    """Each finished layer's held-out accuracy against its kept distance (layers evaluated on held-out data
    only), and a line on whether the distance tracked accuracy: Spearman's rho over the layers, where a
    good proxy gives rho near -1 (a smaller distance, a higher accuracy)."""
    points = [(v.index, v.best_distance, v.accuracy) for v in sorted(snap.spaces, key=lambda v: v.index)
              if v.best_distance is not None and v.accuracy is not None]
    if not points:
        return None, ""
    fig = Figure(figsize=(5.0, 3.0), dpi=80)
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.17, top=0.95)
    ax = fig.add_subplot()
    ax.plot([p[1] for p in points], [100 * p[2] for p in points], color=COLORS.get(snap.method, "black"),
            marker="o", linestyle="-", linewidth=0.8)
    for k, d, a in points:
        ax.annotate(str(k + 1), (d, 100 * a), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("kept class-relevant distance")
    ax.set_ylabel("held-out accuracy, %")
    rho = spearman([p[1] for p in points], [p[2] for p in points])
    if rho is None:
        return fig, f"{len(points)} layer(s) evaluated: a rank correlation needs 3."
    verdict = ("the distance tracked accuracy" if rho <= -0.5 else
               "the distance did not track accuracy" if rho >= 0 else "the distance tracked accuracy weakly")
    return fig, (f"Spearman's ρ between kept distance and held-out accuracy over {len(points)} layers: "
                 f"**{rho:+.2f}** ({verdict} on this run; −1: a smaller distance always meant a higher accuracy).")
