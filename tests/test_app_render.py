"""The studio's pictures and text as pure functions of a snapshot: the journey strip, its columns, the
change each layer made, the timeline's time left."""
from pathlib import Path

import numpy as np
import pytest

from hpd_app import render
from hpd_app.snapshot import Snapshot, SpaceView

CLASSES = tuple(f"class {c}" for c in range(10))


def snapshot(layers: int, **changes) -> Snapshot:
    rng = np.random.default_rng(0)
    base = (rng.random((20, 32, 32, 1)) * 255).astype(np.uint8)  # IPC 2
    views = tuple(SpaceView(k, f"cut{k}", 1, 0.1, None, base if k < 2 else 255 - base) for k in range(layers))
    return Snapshot("r", "hpd", spaces=views, class_names=CLASSES, ipc=2, layers=tuple(v.name for v in views),
                    **changes)


def test_the_journey_has_a_column_per_finished_layer_and_a_click_maps_to_it():
    snap = snapshot(3, selected_space=1)
    image = render.journey(snap)
    assert image.size == (render.JOURNEY_LEFT + 3 * render.CELL, render.JOURNEY_HEAD + 10 * render.CELL)
    x = render.JOURNEY_LEFT + render.CELL + 5
    assert [render.journey_column(snap, x + k * render.CELL) for k in range(3)] == [1, 2, None]
    assert render.journey_column(snap, render.JOURNEY_LEFT - 1) is None  # the class names
    frame = np.asarray(image)[render.JOURNEY_HEAD + 10, render.JOURNEY_LEFT + render.CELL]  # the selection's frame
    assert tuple(frame) == (0xd6, 0x27, 0x28)
    assert render.journey(Snapshot("r", "hpd")) is None


def test_each_layer_says_how_much_it_changed_the_set_and_the_difference_view_shows_it():
    snap = snapshot(3)
    changes = render.layer_changes(sorted(snap.spaces, key=lambda v: v.index))
    assert changes[0] is None and changes[1] == 0.0 and changes[2] > 0.3  # layer 2 kept layer 1's images
    diff = np.asarray(render.journey(snap, diffs=True))
    tile = diff[render.JOURNEY_HEAD + 5: render.JOURNEY_HEAD + 40, render.JOURNEY_LEFT + render.CELL + 5:
                render.JOURNEY_LEFT + render.CELL + 40]
    assert tile.max() == 0  # nothing moved from layer 1 to layer 2: black


def test_the_timeline_says_how_long_is_left_from_the_measured_step_time():
    snap = Snapshot("r", "hpd", state="running", layers=("a", "b"), steps_per_space=50, steps_done=10, elapsed_s=20.0)
    assert "about 3 min 00 s left" in render.timeline(snap)
    assert "left" not in render.timeline(Snapshot("r", "hpd", state="paused", layers=("a",), steps_per_space=5,
                                                  steps_done=1, elapsed_s=1.0))


def test_a_saved_preview_is_cut_back_into_its_images_and_its_path_is_checked(tmp_path):
    """save_preview's PNG (the engine's) read by the scrubber: the same images, class-major, at IPC 1 and 3."""
    import pytest
    import torch

    from engine import dataset_info
    from engine.run.export import save_preview
    from hpd_app.previews import open_preview
    info = dataset_info("fashion-mnist")
    for ipc in (1, 3):
        x = torch.rand(10 * ipc, 1, 32, 32) * 2 - 1   # generator space [-1, 1] ...
        images = info.from_generator(x)                # ... normalised, as a run's previews are
        rel = save_preview(tmp_path, 0, 4, images, info)
        tiles = render.preview_tiles(open_preview(tmp_path, rel), 10, ipc)
        expected = (info.denormalize(images).clamp(0, 1) * 255).round().to(torch.uint8)
        assert len(tiles) == 10 * ipc
        for tile, want in zip(tiles, expected):
            assert np.abs(tile[..., 0].astype(int) - want[0].numpy().astype(int)).max() <= 1
    for bad in ("../run.json", "previews/../../etc/passwd", "/etc/hostname", "grid.png"):
        with pytest.raises(ValueError, match="is not one of this run's previews"):
            open_preview(tmp_path, bad)


def test_the_chart_draws_the_scrubbed_step_as_a_cursor():
    snap = snapshot(2, steps_per_space=3)
    plain, marked = render.chart([snap]), render.chart([snap], cursor=4)
    lines = lambda fig: [ln for ln in fig.axes[0].lines if ln.get_label() == "scrubbed step"]  # noqa: E731
    assert not lines(plain) and lines(marked)[0].get_xdata()[0] == 4


def test_the_strip_ends_with_the_layer_in_progress_and_can_show_cams():
    rng = np.random.default_rng(1)
    now = (rng.random((20, 32, 32, 1)) * 255).astype(np.uint8)
    running = snapshot(2, state="running", space=2, step=3, preview=now)
    image = render.journey(running)
    assert image.size[0] == render.JOURNEY_LEFT + 3 * render.CELL  # two finished layers, then "now"
    assert render.journey_column(running, render.JOURNEY_LEFT + 2 * render.CELL + 5) is None  # not selectable
    x0, y0 = render.JOURNEY_LEFT + 2 * render.CELL + 1, render.JOURNEY_HEAD + 1
    tile = np.asarray(image)[y0:y0 + render.CELL - 2, x0:x0 + render.CELL - 2, 0]
    from PIL import Image
    want = np.asarray(Image.fromarray(now[0, :, :, 0]).resize((render.CELL - 2, render.CELL - 2), Image.NEAREST))
    assert np.array_equal(tile, want)  # the first class's first image of the latest preview
    finished = snapshot(2, state="finished", space=2, preview=now)
    assert render.journey(finished).size[0] == render.JOURNEY_LEFT + 2 * render.CELL  # done: no "now" column
    red = [np.full((32, 32, 3), (255, 0, 0), np.uint8)] * 20
    cams = np.asarray(render.journey(finished, overlays={1: red}))
    y = render.JOURNEY_HEAD + 40
    assert tuple(cams[y, render.JOURNEY_LEFT + render.CELL + 40]) == (255, 0, 0)   # layer 2 shows its CAM
    assert tuple(cams[y, render.JOURNEY_LEFT + 40]) != (255, 0, 0)                 # layer 1 its images


def test_distance_vs_accuracy_says_whether_the_distance_tracked_accuracy():
    assert render.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert render.spearman([1, 2, 3], [1, 3, 2]) == 0.5                   # by hand: ranks (1,2,3) vs (1,3,2)
    assert abs(render.spearman([1, 2, 2, 3], [1, 2, 3, 4]) - 0.9487) < 1e-4  # ties share their mean rank
    assert render.spearman([1, 1, 1], [1, 2, 3]) is None and render.spearman([1, 2], [2, 1]) is None
    views = tuple(SpaceView(k, f"cut{k}", 1, d, a) for k, (d, a) in enumerate([(0.30, 0.60), (0.25, 0.65), (0.20, 0.70)]))
    fig, line = render.distance_vs_accuracy(Snapshot("r", "hpd", spaces=views))
    assert fig is not None and "**-1.00** (the distance tracked accuracy" in line
    worse = tuple(SpaceView(k, f"cut{k}", 1, d, a) for k, (d, a) in enumerate([(0.20, 0.60), (0.25, 0.65), (0.30, 0.70)]))
    assert "did not track accuracy" in render.distance_vs_accuracy(Snapshot("r", "hpd", spaces=worse))[1]
    assert render.distance_vs_accuracy(snapshot(2)) == (None, "")        # no held-out accuracy: no chart


def test_the_zoom_draws_every_image_larger_and_the_strip_still_maps_clicks():
    snap = snapshot(3, selected_space=1)
    for cell in (96, 192):
        lay = render.Layout(cell)  # labels and bands grow with the images: the page shrinks a zoomed picture
        assert (lay.band, lay.left) == (render.BAND * cell // 96, render.JOURNEY_LEFT * cell // 96)
        g = render.grid(snap.spaces[0].images, CLASSES, 2, cell)
        assert g.size == (10 * cell, lay.header + 2 * cell)
        strip = render.journey(snap, cell=cell)
        assert strip.size == (lay.left + 3 * cell, lay.head + 10 * cell)
        assert render.journey_column(snap, lay.left + int(2.5 * cell), cell) == 2


def test_the_page_takes_only_the_zooms_it_offers():
    from hpd_app.ui import ZOOMS, _cell
    assert [_cell(z) for z in ZOOMS] == list(ZOOMS)
    assert {_cell(z) for z in (100_000, -5, 0, None, "288", "x", 96.0)} == {96, 288}


def test_page_images_are_written_once_whole(tmp_path, monkeypatch):
    """Gradio 6 rewrites a PIL value's cache file in place each time it is sent, which a second page's poll
    did while another request streamed it; the page sends paths that write_once wrote once, whole."""
    from PIL import Image
    from hpd_app.images import write_once
    image = Image.fromarray(np.arange(64 * 48 * 3, dtype=np.uint8).reshape(64, 48, 3))
    first = write_once(image, tmp_path)
    with monkeypatch.context() as m:  # sent again: found, never written again
        m.setattr("hpd_app.images.tempfile.mkstemp", lambda **_: pytest.fail("the image was written again"))
        assert write_once(image, tmp_path) == first
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(image))
    other = write_once(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), tmp_path)
    assert other != first and not list(tmp_path.rglob(".image.*"))  # no staging file left
    assert write_once(None, tmp_path) is None
