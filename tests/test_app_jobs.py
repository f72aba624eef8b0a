"""The studio's jobs on their own, on a fake clock, with real (tiny) runs: finished runs nobody visits are
released from memory; an opened run folder follows the process still writing it."""
from __future__ import annotations

import time

import pytest

import numpy as np

from engine.run import Run, RunController
from hpd_app.browse import FolderJob
from hpd_app.reduce import reduce
from hpd_app.snapshot import Snapshot
from hpd_app.jobs import Components, JobRegistry
from run_fixtures import fake_root, tiny_config, tiny_generator, tiny_proxy
from test_app_fixtures import TINY

HOUR = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry(tmp_path):
    clock = Clock()
    components = Components(tiny_generator(), tiny_proxy(), str(fake_root(tmp_path / "fm")))
    reg = JobRegistry(tmp_path / "runs", components, idle_release_s=2 * HOUR, clock=clock)
    yield reg, clock
    reg.shutdown()


def settle(reg: JobRegistry, run_id: str, states: tuple[str, ...], owner: str = "me") -> None:
    deadline = time.monotonic() + 90
    while reg.job(run_id, owner).snapshot.state not in states:
        assert time.monotonic() < deadline, f"{run_id} stuck in {reg.job(run_id, owner).snapshot.state}"
        time.sleep(0.05)


def test_an_idle_finished_run_is_released_and_its_folder_still_opens(registry):
    reg, clock = registry
    old = reg.start(TINY | {"steps_per_space": 1}, "me")
    settle(reg, old, ("finished",))
    clock.now += 3 * HOUR
    new = reg.start(TINY | {"steps_per_space": 1}, "me")  # taking new memory releases the idle run
    assert reg.owned("me") == [new]
    with pytest.raises(LookupError, match=f"released after 2 h without a visit; open its folder '{old}'"):
        reg.job(old, "me")
    with pytest.raises(LookupError, match="^no run"):
        reg.job(old, "other")  # to anyone else a released run is as missing as ever
    browsed = reg.open_folder(old, "me")
    assert reg.job(browsed, "me").snapshot.state == "finished"
    settle(reg, new, ("finished",))
    clock.now += 3 * HOUR
    reg.open_folder(new, "me")  # a live run of mine reattaches: no new memory, nothing released
    assert reg.owned("me") == [new, browsed]
    reg.start(TINY | {"steps_per_space": 1}, "other")
    assert reg.owned("me") == []  # an opened folder goes like a finished run


def test_visited_or_unfinished_runs_stay(registry):
    reg, clock = registry
    done = reg.start(TINY | {"steps_per_space": 1}, "me")
    settle(reg, done, ("finished",))
    held = reg.start(TINY | {"steps_per_space": 50}, "me")
    reg.job(held, "me").pause()
    settle(reg, held, ("paused",))
    clock.now += 1.5 * HOUR
    reg.job(done, "me")                 # a visit restarts the finished run's idle time
    clock.now += 1.5 * HOUR             # 3 h after the paused run was last seen: paused is not finished
    reg.start(TINY | {"steps_per_space": 1}, "other")
    assert reg.owned("me") == [done, held]
    clock.now += 1 * HOUR
    reg.start(TINY | {"steps_per_space": 1}, "other")
    assert reg.owned("me") == [held]     # the finished run went; the paused run stays
    with pytest.raises(LookupError, match="no run"):
        reg.job(held, "other")          # released or not, someone else's run stays invisible


def test_an_opened_folder_follows_the_process_writing_it(tmp_path):
    """A CLI run still writing its folder: the browser sees its new steps and layers, and keeps the user's
    layer pick across the re-reads."""
    clock = Clock()
    run = Run(tiny_config(fake_root(tmp_path / "fm"), steps_per_space=2), tmp_path / "cli",
              generator=tiny_generator(), classifier=tiny_proxy())
    run.prepare()
    run.emit_state("running")
    for _ in range(3):  # the first layer's 2 steps and the second's first
        run.step()
    job = FolderJob("cli@1", "me", run.run_dir, clock=clock)
    first = job.snapshot
    assert first.state == "running" and first.steps_done == 3 and [v.index for v in first.spaces] == [0]
    job.select_layer(0)
    run.step()
    run.step()
    assert job.snapshot.steps_done == 3  # re-read at most once a second
    clock.now += 1.0
    now = job.snapshot
    assert now.steps_done == 5 and [v.index for v in now.spaces] == [0, 1]
    # two steps and the third layer's step 0
    assert len(now.curve) == len(first.curve) + 3 and now.preview_version > first.preview_version
    assert (now.selected_space, now.selection_reason) == (0, "user")
    while run.step():
        pass
    run.emit_state("finished")
    clock.now += 1.0
    done = job.snapshot
    assert done.state == "finished" and done.steps_done == run.state.steps_done
    clock.now += 1.0
    assert job.snapshot is done  # a finished folder is not read again


def test_a_folder_replayed_from_its_event_log_gives_the_live_snapshot(tmp_path):
    """The live view and a folder opened from disk run the same reducers over the same events."""
    run = Run(tiny_config(fake_root(tmp_path / "fm"), steps_per_space=2, accuracy_pick=True, eval_epochs=2,
                          holdout_per_class=5), tmp_path / "live", generator=tiny_generator(), classifier=tiny_proxy())
    live = [Snapshot("x", "hpd")]
    run.bus.subscribe(lambda e: live.append(reduce(live[-1], e)))
    ctl = RunController(run)
    ctl.start()
    assert ctl.wait(120) and run.status == "finished"
    ctl.select_layer(1).result()
    a, b = live[-1], FolderJob("x", "me", run.run_dir).snapshot
    for name in ("state", "layers", "steps_per_space", "class_names", "ipc", "mean", "std", "steps_done",
                 "curve", "selected_space", "selection_reason", "export_path", "space", "step"):
        assert getattr(a, name) == getattr(b, name), name
    assert [(v.index, v.name, v.best_step, v.best_distance, v.accuracy) for v in a.spaces] == [
        (v.index, v.name, v.best_step, v.best_distance, v.accuracy) for v in b.spaces]
    assert all(np.array_equal(x.images, y.images) for x, y in zip(a.spaces, b.spaces))
    assert np.array_equal(a.preview, b.preview) and a.selected_space == 1  # the grid follows the selection
    assert all(v.accuracy is not None for v in b.spaces)


def test_a_folder_whose_process_ended_mid_run_is_interrupted(tmp_path):
    run = Run(tiny_config(fake_root(tmp_path / "fm"), steps_per_space=2), tmp_path / "cut",
              generator=tiny_generator(), classifier=tiny_proxy())
    run.prepare()
    run.emit_state("running")
    for _ in range(3):
        run.step()
    assert FolderJob("a", "me", run.run_dir).snapshot.state == "running"  # its writer is still alive
    run.close()  # what a kill does: the process ends, the kernel drops its lock
    snap = FolderJob("b", "me", run.run_dir).snapshot
    assert snap.state == "interrupted" and "--resume" in snap.message and snap.steps_done == 3
