"""Run folders on disk (this server's or the CLI's) read back into a Snapshot: run.json for the plan and
scores, events.jsonl for the curves, spaces/space_XX.pt for each finished layer's images."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from engine import RunConfig, dataset_info, export_files, read_events, read_space_file

from .bundle import zip_export
from .reduce import to_uint8
from .snapshot import TERMINAL, CurvePoint, Snapshot, SpaceView

FOLLOW_EVERY_S = 1.0  # how often an unfinished folder's files are checked for news


def list_run_folders(runs_dir: Path) -> list[str]:
    """Folder names under the runs dir that hold a run.json, newest first."""
    if not Path(runs_dir).is_dir():
        return []
    found = [p for p in Path(runs_dir).iterdir() if (p / "run.json").is_file()]
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def run_folder(runs_dir: Path, name: str) -> Path:
    """The folder `name` directly under the runs dir; nothing outside it can be opened."""
    base = Path(runs_dir).resolve()
    path = (base / name).resolve()
    if not name or path.parent != base:
        raise ValueError(f"{name!r} is not a folder directly under the runs folder {base}")
    if not (path / "run.json").is_file():
        raise ValueError(f"{path} holds no run.json; it is not a run folder")
    return path


def _curve(events: list[dict], steps_per_space: int) -> tuple[CurvePoint, ...]:
    points: dict[int, CurvePoint] = {}  # by x: a resumed run repeats steps; the later one wins
    for e in events:
        if e.get("kind") == "step":
            x = e["space"] * steps_per_space + e["step"]
            points[x] = CurvePoint(x, e["space"], e.get("distance"), e.get("loss"))
    return tuple(points[x] for x in sorted(points))


def load_folder(run_id: str, run_dir: Path) -> tuple[Snapshot, dict, dict]:
    """(snapshot, {space index: (normalised images, labels)}, run.json) of a run folder."""
    meta = json.loads((run_dir / "run.json").read_text())
    info = dataset_info(meta["config"]["dataset"])
    sps = meta["steps_per_space"]
    tensors, views = {}, []
    for record in meta["spaces"]:
        k = record["index"]
        if not (run_dir / "spaces" / f"space_{k:02d}.pt").is_file():
            continue
        saved = read_space_file(run_dir, k)
        tensors[k] = (saved["images"], saved["labels"])
        views.append(SpaceView(k, record["name"], record["best_step"], record["best_distance"], record["accuracy"],
                               to_uint8(saved["images"], info)))
    events = read_events(run_dir / "events.jsonl")
    curve = _curve(events, sps)
    last = curve[-1] if curve else None
    # run.json is rewritten at layer ends and state changes, the event log at every step.
    steps_done = max([meta["steps_done"]] + [e["steps_done"] for e in events if e.get("kind") == "step"])
    shown = meta.get("selected_space")
    shown = shown if shown in tensors else (views[-1].index if views else None)
    exported = run_dir / "synthetic.pt"
    snap = Snapshot(
        run_id, meta["method"], state=meta["state"], source="folder", layers=tuple(s["name"] for s in meta["spaces"]),
        steps_per_space=sps, class_names=tuple(meta["dataset"]["classes"]), ipc=meta["config"]["ipc"],
        space=last.space if last else 0, step=(last.x - last.space * sps) if last else 0,
        steps_done=steps_done, elapsed_s=meta.get("elapsed_s", 0.0), curve=curve, spaces=tuple(views),
        preview=views[[v.index for v in views].index(shown)].images if shown is not None else None,
        preview_version=1, selected_space=meta.get("selected_space"), selection_reason=meta.get("selection_reason"),
        export_path=str(exported) if exported.is_file() else None,
        message=next((e["message"] for e in reversed(events) if e.get("kind") == "error"), ""))
    if shown is not None:
        tensors["preview"] = tensors[shown]
    return snap, tensors, meta


def _stamp(run_dir: Path) -> tuple:
    """What changes when a writer adds a step (events.jsonl) or finishes a layer or a state (run.json)."""
    stamp = []
    for path in (run_dir / "events.jsonl", run_dir / "run.json"):
        try:
            st = path.stat()
            stamp.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            stamp.append(None)
    return tuple(stamp)


class FolderJob:
    """A run folder opened for browsing: pick a layer and export; it does not compute."""
    source = "folder"

    def __init__(self, run_id: str, owner: str, run_dir: Path, clock=time.monotonic):
        self.run_id, self.owner, self.run_dir = run_id, owner, run_dir
        self._lock = threading.Lock()
        self._clock = clock
        self._stamp, self._checked = _stamp(run_dir), clock()
        self._snap, self._tensors, self._meta = load_folder(run_id, run_dir)

    @property
    def snapshot(self) -> Snapshot:
        self._follow()
        return self._snap

    def _follow(self) -> None:
        """Re-read a folder that another process (a CLI run, another server) is still writing."""
        if self._snap.state in TERMINAL or self._clock() - self._checked < FOLLOW_EVERY_S:
            return
        with self._lock:
            self._checked, stamp = self._clock(), _stamp(self.run_dir)
            if stamp == self._stamp:
                return
            old = self._snap
            self._stamp = stamp
            self._snap, self._tensors, self._meta = load_folder(self.run_id, self.run_dir)
            self._snap = self._snap.evolve(preview_version=old.preview_version + 1)
        if old.selection_reason == "user" and old.selected_space in self._tensors:
            self.select_layer(old.selected_space)  # the user's pick outlives the reload

    def _not_live(self, what: str) -> None:
        raise ValueError(f"{what} needs a live run; {self.run_dir.name} was opened from disk (browse, pick a layer, export)")

    def pause(self) -> None:
        self._not_live("Pause")

    def resume(self) -> None:
        self._not_live("Resume")

    def step(self) -> None:
        self._not_live("Step")

    def stop(self) -> None:
        self._not_live("Stop")

    def select_layer(self, space: int) -> None:
        if space not in self._tensors:
            raise ValueError(f"layer {space} has no saved selection in {self.run_dir.name}; "
                             f"saved: {sorted(k for k in self._tensors if isinstance(k, int))}")
        with self._lock:
            self._tensors["preview"] = self._tensors[space]
            view = next(v for v in self._snap.spaces if v.index == space)
            self._snap = self._snap.evolve(selected_space=space, selection_reason="user", preview=view.images,
                                           preview_version=self._snap.preview_version + 1)

    def export(self) -> Path:
        space = self._snap.selected_space
        if space is None or space not in self._tensors:
            raise ValueError(f"{self.run_dir.name} has no finished layer to export")
        saved = read_space_file(self.run_dir, space)
        info = dataset_info(self._meta["config"]["dataset"])
        path = export_files(self.run_dir, saved, info, self._meta | {"exported_space": space})
        zip_export(self.run_dir)
        with self._lock:
            self._snap = self._snap.evolve(export_path=str(path))
        return path

    def cam_input(self, key):
        entry = self._tensors.get(key)
        if entry is None:
            return None
        config = RunConfig(**self._meta["config"])
        return entry[0], entry[1], config.classifier_spec, config.dataset
