"""A run that fails never wedges or corrupts: a damaged checkpoint on resume is one sentence (exit 2)
with nothing in the folder changed; a log that cannot be written ends the run as failed, and the thread's
end is reported even when recording the failure fails too; concurrent exports leave one whole zip;
limits are one sentence before any work."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from engine.cli import main as engine_main
from engine.run import Run, RunConfig, RunController, is_live
from engine.run import run as run_module
from engine.run.limits import CEILINGS, check_memory, estimate
from hpd_app.browse import FolderJob
from hpd_app.bundle import zip_export
from engine.run.lock import folder_lock
from run_fixtures import fake_root, tiny_config, tiny_generator, tiny_proxy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fake_root(tmp_path_factory.mktemp("fm"))


@pytest.fixture(scope="module")
def killed(root, tmp_path_factory):
    """A run folder whose process ended after its first layer (checkpoint.pt written), as a kill leaves it."""
    run = Run(tiny_config(root, steps_per_space=1), tmp_path_factory.mktemp("k") / "run",
              generator=tiny_generator(), classifier=tiny_proxy())
    run.prepare()
    run.emit_state("running")
    run.step()
    run.close()
    assert (run.run_dir / "checkpoint.pt").is_file() and not run.finished
    return run.run_dir


def _listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _wrong_type(path: Path) -> None:
    torch.save([1, 2, 3], path)  # a valid torch file, not a run checkpoint


@pytest.mark.parametrize("damage, says", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), r"is damaged \(\w+\); delete it"),
    (lambda p: p.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1))
                                   .to(torch.uint8).tolist())), r"is damaged \(\w+\); delete it"),
    (_wrong_type, r"is not a run checkpoint of this version \(it holds a list\); delete it"),
], ids=["truncated", "random-bytes", "wrong-type"])
def test_resume_from_a_damaged_checkpoint_is_one_sentence_and_changes_nothing(killed, tmp_path, capsys, damage,
                                                                              says):
    folder = tmp_path / "run"
    shutil.copytree(killed, folder)
    damage(folder / "checkpoint.pt")
    before = _listing(folder)
    code = engine_main(["distill", "--resume", str(folder)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "checkpoint.pt" in lines[0], err
    assert re.search(says, lines[0]) and "weights_only" not in err and "Traceback" not in err
    assert _listing(folder) == before          # nothing written, nothing truncated
    assert is_live(folder) is False            # and the folder's lock was let go


@pytest.mark.parametrize("args, says", [
    (["--ipc", "100000"], "--ipc must be at most 1000, got 100000"),
    (["--steps-per-space", str(10 ** 12)], "--steps-per-space must be at most 100000"),
    (["--batch-real", "1000000"], "--batch-real must be at most 10000"),
    (["--mean-ws-samples", str(10 ** 9)], "--mean-ws-samples must be at most 100000"),
    (["--eval-epochs", "99999"], "--eval-epochs must be at most 10000"),
    (["--device", "meta"], "--device meta is not supported"),
])
def test_the_cli_refuses_what_no_device_could_run(root, tmp_path, capsys, args, says):
    code = engine_main(["distill", "--method", "pixel", "--data-root", str(root), "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_ceilings_and_the_memory_estimate_name_the_field(root):
    for name, limit in CEILINGS.items():
        with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} must be at most {limit}"):
            RunConfig(**{name: limit + 1})
    G = tiny_generator()
    config = tiny_config(root, ipc=1000, sg_batch="single")
    parts = estimate(config, G, 10, 1, 32, [0])
    assert parts["the generator's gradient graph"][1] == "ipc"
    with pytest.raises(ValueError, match=r"--ipc 1000 needs about .* more than the 1.0 MB a run may use there; "
                                         r"lower --ipc or --sg-batch chunked"):
        check_memory(config, G, 10, 1, 32, [0], budget=10 ** 6)
    with pytest.raises(ValueError, match="lower --batch-real"):
        check_memory(tiny_config(root, batch_real=10_000), G, 10, 1, 32, [0], budget=10 ** 8)
    check_memory(tiny_config(root), G, 10, 1, 32, [0], budget=10 ** 9)  # the tiny run fits in 1 GB


class _BrokenLog:
    """Makes RUN_DIR/events.jsonl unwritable while a run appends to it. The folder is made read-only,
    which does not stop root, so the log is also swapped (atomically, a writer never sees it missing)
    for a link to a folder: appending to it fails whoever runs the test. Restored on exit."""

    def __init__(self, run_dir: Path):
        self.dir, self.log = run_dir, run_dir / "events.jsonl"
        self.saved, self.target = run_dir / ".events.saved", run_dir / ".events.dir"

    def __enter__(self):
        os.link(self.log, self.saved)
        self.target.mkdir()
        link = self.dir / ".events.link"
        os.symlink(self.target, link)
        os.replace(link, self.log)
        self.dir.chmod(0o555)
        return self

    def __exit__(self, *exc):
        self.dir.chmod(0o755)
        os.replace(self.saved, self.log)
        self.target.rmdir()


def test_a_log_that_cannot_be_written_ends_the_run_as_failed(root, tmp_path):
    run = Run(tiny_config(root, steps_per_space=200), tmp_path / "r", generator=tiny_generator(),
              classifier=tiny_proxy())
    seen, ended = [], threading.Event()
    run.bus.subscribe(seen.append)
    ctl = RunController(run)
    ctl.on_end(lambda r: ended.set())
    ctl.start()
    while not any(getattr(e, "kind", None) and e.kind.value == "step" for e in seen):
        assert ctl.wait(0.05) is False
    with _BrokenLog(run.run_dir):
        assert ended.wait(60) and ctl.wait(10)
    assert run.status == "failed"
    states = [e.state for e in seen if e.kind.value == "state"]
    assert states[-1] == "failed"  # delivered to listeners although the log refused it
    error = next(e for e in seen if e.kind.value == "error")
    assert error.message.startswith("EventLogError: the run's event log could not be written")
    assert is_live(run.run_dir) is False


def test_the_thread_ends_cleanly_even_when_recording_the_failure_fails(root, tmp_path, monkeypatch):
    run = Run(tiny_config(root, steps_per_space=2), tmp_path / "r", generator=tiny_generator(),
              classifier=tiny_proxy())
    run.prepare()

    def broken_step():
        raise OSError(28, "No space left on device")

    def broken_json(*_):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(run, "step", broken_step)
    monkeypatch.setattr(run_module, "write_json", broken_json)
    ends = []
    ctl = RunController(run)
    ctl.on_end(lambda r: ends.append(r.status))
    ctl.start()
    assert ctl.wait(30)
    assert ends == ["failed"] and is_live(run.run_dir) is False


def test_parallel_exports_leave_one_whole_zip(root, tmp_path):
    run = Run(tiny_config(root, steps_per_space=1), tmp_path / "r", generator=tiny_generator(),
              classifier=tiny_proxy())
    ctl = RunController(run)
    ctl.start()
    assert ctl.wait(120) and run.status == "finished"
    folder = FolderJob("f", "me", run.run_dir)
    errors = []

    def export(i):
        try:
            if i % 2:
                run.export(i % 3)
                with folder_lock(run.run_dir):
                    zip_export(run.run_dir)
            else:
                folder.export()
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)
    threads = [threading.Thread(target=export, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with zipfile.ZipFile(run.run_dir / "export.zip") as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        saved = torch.load(io.BytesIO(zf.read("synthetic.pt")), weights_only=True)
        described = json.loads(zf.read("export.json"))
    assert {"synthetic.pt", "grid.png", "export.json"} <= names and saved["images"].shape == (10, 1, 32, 32)
    assert described["exported_space"] == saved["space"]  # one export's files, not a mix
    leftovers = [p.name for p in run.run_dir.iterdir() if p.name.startswith(".") and p.name not in
                 (".lock", ".export.lock")]
    assert leftovers == []


def test_an_export_cut_short_mid_swap_is_rolled_forward_whole(root, tmp_path):
    """A crash after some of a staged export's entries were swapped in: the next open completes the swap,
    so the folder holds one export whole (the new one), never a mix; an unfinished staging is dropped."""
    from engine.run.durable import COMPLETE
    run = Run(tiny_config(root, steps_per_space=1), tmp_path / "cut", generator=tiny_generator(),
              classifier=tiny_proxy())
    while run.step():
        pass
    run.close()
    folder = run.run_dir
    # Stage the run's own export of space 1 by hand, as Run.export would, and "crash" after one entry.
    staging = folder / ".staging-crash"
    staging.mkdir()
    from engine.run.export import export_files, read_space_file
    export_files(staging, read_space_file(folder, 1), run.ctx.info, {"exported_space": 1})
    (staging / COMPLETE).touch()
    os.replace(staging / "synthetic.pt", folder / "synthetic.pt")  # the one entry swapped before the crash
    unfinished = folder / ".staging-unfinished"
    unfinished.mkdir()
    (unfinished / "synthetic.pt").write_bytes(b"half")
    again = Run(tiny_config(root, steps_per_space=1), folder, generator=tiny_generator(), classifier=tiny_proxy())
    again.prepare()
    again.close()
    assert not list(folder.glob(".staging-*"))
    assert torch.load(folder / "synthetic.pt", weights_only=True)["space"] == 1
    assert json.loads((folder / "export.json").read_text())["exported_space"] == 1  # the rest came along
    assert torch.equal(torch.load(folder / "images.pt", weights_only=True),
                       torch.load(folder / "synthetic.pt", weights_only=True)["images"])
