"""Runs on several processes from the studio: torchrun as a subprocess, queued like a run, followed
through its folder; Stop ends every process; what cannot run that way is refused in one sentence."""
from __future__ import annotations

import json
import os
import time

import pytest

from hpd_app.jobs import Components, JobRegistry
from run_fixtures import fake_root

pytestmark = pytest.mark.dist
SMALL = {"method": "pixel", "objective": "dm", "ipc": 2, "steps_per_space": 2, "batch_real": 8,
         "distance_real_per_class": 5, "preview_every": 1, "device": "cpu"}


@pytest.fixture
def registry(tmp_path):
    reg = JobRegistry(tmp_path / "runs", Components(data_root=str(fake_root(tmp_path / "fm"))))
    yield reg
    reg.shutdown()


def wait(pred, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_run_on_two_processes_is_followed_to_its_end_and_exported(registry):
    rid = registry.start(SMALL | {"processes": 2}, "me")
    job = registry.job(rid, "me")
    wait(lambda: job.snapshot.state in ("finished", "failed"))
    snap = job.snapshot
    assert snap.state == "finished", snap.message
    assert snap.source == "process" and snap.steps_done == 2 and [v.index for v in snap.spaces] == [0]
    meta = json.loads((job.run_dir / "run.json").read_text())
    assert meta["owner"] == "me" and meta["config"]["ipc"] == 2  # the user's run, not a shared CLI folder
    assert job.export().is_file() and job.bundle().is_file()
    with pytest.raises(ValueError, match="does not work on a run on several processes"):
        job.pause()
    wait(lambda: not job.active, 60)  # torchrun exits a little after rank 0 finished the folder


def test_stop_ends_every_process_and_marks_the_folder(registry):
    rid = registry.start(SMALL | {"processes": 2, "steps_per_space": 400}, "me")
    job = registry.job(rid, "me")
    wait(lambda: job.snapshot.steps_done >= 1)
    pid = job._proc.pid
    job.stop()
    wait(lambda: job.snapshot.state == "stopped" and not job.active, 60)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # torchrun's session is gone, workers and all
    assert json.loads((job.run_dir / "run.json").read_text())["state"] == "stopped"


def test_what_cannot_run_on_several_processes_is_refused_before_it_queues(registry):
    too_many = (os.cpu_count() or 1) + 1
    for values, words in ((SMALL | {"processes": too_many}, f"more than this server's {os.cpu_count()} CPU cores"),
                          (SMALL | {"processes": 2, "objective": "sre2l"}, "too few for 2 processes"),
                          (SMALL | {"processes": 0}, "at least 1")):
        with pytest.raises(ValueError, match=words):
            registry.start(values, "me")
    with pytest.raises(ValueError, match="Compare runs each run in one process"):
        registry.start_together([SMALL | {"processes": 2, "method": "hpd"}, SMALL | {"processes": 2, "method": "glad"}],
                                "me")
    assert registry.owned("me") == []
