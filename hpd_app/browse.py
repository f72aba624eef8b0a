"""Run folders on disk (this server's or the CLI's) read back into a Snapshot by replaying events.jsonl
through the live reducers; spaces/space_XX.pt give each finished layer's images, run.json only the
export's provenance (and the plan of folders older than plan events)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from dataclasses import replace

from engine import (Event, PlanEvent, RunConfig, SpaceEndEvent, dataset_info, export_files, from_json, is_live,
                    read_space_file)
from engine.run.durable import replacing, staged_entries, staged_folder
from engine.run.lock import RunLock, folder_lock

from .bundle import zip_export
from .previews import journey_gif
from .render import journey
from .reduce import reduce
from .snapshot import LABELS, TERMINAL, Snapshot

FOLLOW_EVERY_S = 1.0  # how often an unfinished folder's files are checked for news


def list_run_folders(runs_dir: Path) -> list[str]:
    """Folder names under the runs dir that hold a run.json, newest first."""
    if not Path(runs_dir).is_dir():
        return []
    found = [p for p in Path(runs_dir).iterdir() if (p / "run.json").is_file()]
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def folder_label(runs_dir: Path, name: str) -> str:
    """What the folder list shows: "name · H-PD · dm · IPC 1 · finished · 12-01 23:40 [· evaluated]"."""
    path = Path(runs_dir) / name
    try:
        meta = json.loads((path / "run.json").read_text())
        config = meta["config"]
        when = time.strftime("%m-%d %H:%M", time.localtime((path / "run.json").stat().st_mtime))
        evaluated = ["evaluated"] if (path / "eval.json").is_file() else []
        return " · ".join([name, LABELS.get(meta["method"], meta["method"]), config["objective"],
                           f"IPC {config['ipc']}", meta.get("state", "?"), when] + evaluated)
    except (OSError, ValueError, KeyError, TypeError):
        return name


def run_folder(runs_dir: Path, name: str) -> Path:
    """The folder `name` directly under the runs dir, resolved (every spelling of one folder gives one
    path); nothing outside it can be opened. The message never shows the server's paths."""
    base = Path(runs_dir).resolve()
    try:
        path = (base / name).resolve() if isinstance(name, str) and name and "\0" not in name else None
    except (OSError, RuntimeError, ValueError):
        path = None
    if path is None or path.parent != base or not (path / "run.json").is_file():
        raise ValueError(f"{str(name)[:80]!r} is not a run folder directly under the runs folder")
    return path


def read_meta(run_dir: Path) -> dict:
    try:
        data = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def mark_state(run_dir: Path, state: str) -> None:
    """Write `state` into run.json of a folder nobody writes (a killed run still said "running"); a
    folder whose lock is held, or that cannot be written, is left as it is."""
    try:
        lock = RunLock.acquire(Path(run_dir))
    except (ValueError, OSError):
        return
    try:
        meta = read_meta(run_dir)
        if meta and meta.get("state") != state:
            with replacing(Path(run_dir) / "run.json") as tmp:
                tmp.write_text(json.dumps(meta | {"state": state}, indent=2, default=str))
    except OSError:
        pass
    finally:
        lock.release()


def _plan_from_meta(meta: dict) -> PlanEvent:
    """A plan for folders written before runs announced theirs (run.json carries the same facts)."""
    cfg, data = meta["config"], meta["dataset"]
    spaces = tuple({"index": s["index"], "cuts": s["cuts"], "name": s["name"], "shape": []} for s in meta["spaces"])
    return PlanEvent(meta["method"], cfg["objective"], meta.get("selection_basis", ""), cfg["ipc"], data["name"],
                     tuple(data["classes"]), tuple(data["mean"]), tuple(data["std"]), spaces, meta["steps_per_space"],
                     True)


class EventLog:
    """events.jsonl read incrementally: each call returns the typed events appended since the last one,
    with each finished space's images loaded from its file (what a live run's events carry in memory)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.path = run_dir / "events.jsonl"
        self._offset = 0

    def restarted(self) -> bool:
        """True if the log shrank (a resumed run dropped its interrupted space): replay from the start."""
        try:
            return self.path.stat().st_size < self._offset
        except FileNotFoundError:
            return self._offset > 0

    def reset(self) -> None:
        self._offset = 0

    def new_events(self) -> list[Event]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a writer may be half-way through a line
        self._offset += len(complete)
        out = []
        for line in complete.decode().splitlines():
            try:
                event = from_json(json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue
            if event is not None:
                out.append(self._with_images(event))
        return out

    def _with_images(self, event: Event) -> Event:
        if isinstance(event, SpaceEndEvent) and (self.run_dir / event.selected_file).is_file():
            return replace(event, images=read_space_file(self.run_dir, event.space)["images"])
        return event


def load_folder(run_id: str, run_dir: Path, log: EventLog, snap: Snapshot | None = None) -> Snapshot:
    """The snapshot of a run folder: the same reducers as a live run, over the folder's event log."""
    if snap is None or log.restarted():
        log.reset()
        snap = Snapshot(run_id, "", source="folder")
    events = log.new_events()
    if not snap.layers and not any(isinstance(e, PlanEvent) for e in events):
        snap = reduce(snap, _plan_from_meta(json.loads((run_dir / "run.json").read_text())))
    for event in events:
        snap = reduce(snap, event)
    if snap.state not in TERMINAL and is_live(run_dir) is False:
        # Nobody holds the folder's lock: the process that wrote it ended before the run did. Whoever ended
        # it may have said how in run.json (the studio's Stop of a torchrun run: "stopped").
        recorded = read_meta(run_dir).get("state")
        if recorded in TERMINAL:
            return snap.evolve(state=recorded)
        snap = snap.evolve(state="interrupted", message="the run was interrupted before it ended (its process "
                           f"stopped); continue it with `python -m engine distill --resume {run_dir}`")
        mark_state(run_dir, "interrupted")  # run.json says so too from now on
    return snap


def _stamp(run_dir: Path) -> tuple:
    """What changes when a writer adds an event (events.jsonl) or rewrites run.json."""
    stamp = []
    for path in (run_dir / "events.jsonl", run_dir / "run.json"):
        try:
            st = path.stat()
            stamp.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            stamp.append(None)
    return tuple(stamp)


class FolderJob:
    """A run folder opened for browsing: pick a layer and export; it does not compute.

    A `shared` folder (a CLI run: no owner recorded) is read-only for the studio: its exports go to
    RUN_DIR/exports/space_XX/, each swapped in whole, never over the run's own synthetic.pt."""
    source = "folder"

    def __init__(self, run_id: str, owner: str, run_dir: Path, clock=time.monotonic, shared: bool = False):
        self.run_id, self.owner, self.run_dir = run_id, owner, run_dir
        self.shared = shared
        self._bundle: Path | None = None
        self._lock = threading.Lock()
        self._clock = clock
        self._log = EventLog(run_dir)
        self._user_pick: int | None = None
        self._stamp, self._checked = _stamp(run_dir), clock()
        self._snap = load_folder(run_id, run_dir, self._log)

    @property
    def snapshot(self) -> Snapshot:
        self._follow()
        return self._snap

    def _follow(self) -> None:
        """Read what another process (a CLI run, another server) has added to the folder since."""
        if self._snap.state in TERMINAL or self._clock() - self._checked < FOLLOW_EVERY_S:
            return
        with self._lock:
            self._checked, stamp = self._clock(), _stamp(self.run_dir)
            if stamp == self._stamp:
                return
            self._stamp = stamp
            self._snap = load_folder(self.run_id, self.run_dir, self._log, self._snap)
        if self._user_pick is not None:
            self.select_layer(self._user_pick)  # the user's pick outlives the writer's own selection

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

    def _saved(self) -> list[int]:
        return [v.index for v in self._snap.spaces if v.images is not None]

    def select_layer(self, space: int) -> None:
        if space not in self._saved():
            raise ValueError(f"layer {space} has no saved selection in {self.run_dir.name}; saved: {self._saved()}")
        with self._lock:
            self._user_pick = space
            view = next(v for v in self._snap.spaces if v.index == space)
            self._snap = self._snap.evolve(selected_space=space, selection_reason="user", preview=view.images,
                                           preview_version=self._snap.preview_version + 1)

    def export(self) -> Path:
        snap = self._snap
        space = snap.selected_space if snap.selected_space in self._saved() else (self._saved() or [None])[-1]
        if space is None:
            raise ValueError(f"{self.run_dir.name} has no finished layer to export")
        meta = read_meta(self.run_dir)
        meta.pop("owner", None)  # export.json travels with the download: no owner id in it
        saved = read_space_file(self.run_dir, space)
        info, provenance = dataset_info(meta["config"]["dataset"]), meta | {"exported_space": space}
        if self.shared:
            exports = self.run_dir / "exports"
            exports.mkdir(exist_ok=True)
            target = exports / f"space_{space:02d}"
            with folder_lock(exports), staged_folder(target) as staging:
                export_files(staging, saved, info, provenance)
                zip_export(staging, journey(self._snap), journey_gif(self.run_dir, self._snap))
        else:
            target = self.run_dir
            with folder_lock(target):
                with staged_entries(target) as staging:
                    export_files(staging, saved, info, provenance)
                zip_export(target, journey(self._snap), journey_gif(self.run_dir, self._snap))
        path = target / "synthetic.pt"
        with self._lock:
            self._bundle = target / "export.zip"
            self._snap = self._snap.evolve(export_path=str(path), exported_space=space)
        return path

    def bundle(self) -> Path:
        """The zip of this browser's last export."""
        if self._bundle is None or not self._bundle.is_file():
            raise ValueError(f"nothing exported from {self.run_dir.name} yet; export first")
        return self._bundle

    def cam_input(self, key):
        snap = self._snap
        space = snap.selected_space if key == "preview" else key
        if space not in self._saved():
            saved = self._saved()
            if key != "preview" or not saved:
                return None
            space = saved[-1]
        config = RunConfig(**json.loads((self.run_dir / "run.json").read_text())["config"])
        saved = read_space_file(self.run_dir, space)
        return saved["images"], saved["labels"], config.classifier_spec, config.dataset
