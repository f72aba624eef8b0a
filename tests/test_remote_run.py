"""A run in a process of its own (engine.run.remote, what the studio uses on the embedded default): the
same images as in this process, commands that return at once and apply between steps, layer choices and
exports after the end, turns across processes, and a child that dies reported as a failure."""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from engine import Run, RunController, StepEvent, Turns, read_space_file
from engine.run import remote
from run_fixtures import fake_root, tiny_config


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fake_root(tmp_path_factory.mktemp("fm"))


def started(config, folder, turns=None, paused=False):
    run = remote.RemoteRun(config, folder, owner="me")
    events = []
    run.bus.subscribe(events.append)
    controller = remote.RemoteController(run, turns, threads=1)
    controller.start(paused=paused)
    return run, controller, events


def until(pred, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_remote_run_gives_the_images_of_a_run_in_this_process(root, tmp_path):
    config = tiny_config(root, method="hpd", ipc=2, seed=5)
    run, controller, events = started(config, tmp_path / "remote")
    assert controller.wait(180) and run.status == "finished"
    torch.set_num_threads(1)
    local = Run(config, tmp_path / "local")
    RunController(local).start()
    until(lambda: local.status == "finished", 180)
    assert run.spaces_done == len(local.state.spaces)
    for space in range(run.spaces_done):
        assert torch.equal(read_space_file(tmp_path / "remote", space)["images"],
                           read_space_file(tmp_path / "local", space)["images"])
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.steps_done for e in steps] == list(range(1, local.state.steps_done + 1))
    assert steps[-1].images is not None and steps[-1].images.shape[0] == 20  # tensors reach this process
    controller.close()


def test_commands_apply_between_steps_and_layers_can_be_chosen_and_exported_after_the_end(root, tmp_path):
    run, controller, events = started(tiny_config(root, ipc=1), tmp_path / "run", paused=True)
    until(lambda: run.status == "paused")
    with pytest.raises(ValueError, match="no space has finished yet"):
        controller.select_layer(0)  # refused at once, in this process
    done = lambda: sum(isinstance(e, StepEvent) for e in events)  # noqa: E731
    controller.step_once()
    until(lambda: done() == 1)
    time.sleep(0.5)
    assert done() == 1 and run.status == "paused"  # one step, then paused again
    t0 = time.monotonic()
    controller.resume()
    assert time.monotonic() - t0 < 0.1  # a command never waits for the child
    assert controller.wait(180) and run.status == "finished"
    assert controller.select_layer(1).result(30) is None
    path = controller.export(1).result(30)
    assert path.is_file() and torch.equal(torch.load(path)["images"], read_space_file(run.run_dir, 1)["images"])
    process = controller._process
    assert process.is_alive()  # kept for those choices until closed
    controller.close()
    assert not process.is_alive()
    with pytest.raises(ValueError, match="open its folder"):
        controller.export(1).result(5)


def test_two_remote_runs_take_turns_across_processes(root, tmp_path):
    turns = Turns(remote.context())
    order = []
    runs = []
    for name in ("a", "b"):
        run, controller, events = started(tiny_config(root, method="pixel", steps_per_space=8), tmp_path / name,
                                          turns=turns)
        run.bus.subscribe(lambda e, name=name: order.append(name) if isinstance(e, StepEvent) else None)
        runs.append((run, controller))
    for run, controller in runs:
        assert controller.wait(180) and run.status == "finished"
        controller.close()
    assert order.count("a") == order.count("b") == 8
    switches = sum(x != y for x, y in zip(order, order[1:]))
    assert switches >= 6, order  # in turn, not one after the other (1 switch)


def test_a_child_that_dies_is_a_failed_run_whose_folder_resumes(root, tmp_path):
    config = tiny_config(root, steps_per_space=2)
    run, controller, events = started(config, tmp_path / "run", paused=True)
    ended = []
    controller.on_end(ended.append)
    until(lambda: run.status == "paused")
    for _ in range(2):  # the first space's two steps, then killed while paused
        controller.step_once()
    until(lambda: run.spaces_done >= 1)
    os.kill(controller._process.pid, signal.SIGKILL)
    assert controller.wait(30) and run.status == "failed" and ended == [run]
    assert "ended unexpectedly (signal 9)" in events[-1].message
    again = Run(config, tmp_path / "run")
    again.prepare()  # the checkpoint of the finished space is there
    assert again.state.space_index >= 1
    again.close()


def test_a_process_that_cannot_start_is_a_failed_run_said_so(root, tmp_path, monkeypatch):
    class NoFork:
        def __init__(self, *args, **kwargs):
            pass

        def start(self):
            raise OSError("Cannot allocate memory")
        exitcode = None

    ctx = remote.context()
    monkeypatch.setattr(remote, "context", lambda: type("Ctx", (), {"Pipe": ctx.Pipe, "Process": NoFork})())
    run, controller, events = started(tiny_config(root), tmp_path / "run")
    assert controller.wait(1) and run.status == "failed"
    assert events[-1].message == "the run's process could not start (Cannot allocate memory)"
    assert not (tmp_path / "run").exists()


def test_a_suspended_run_lets_its_process_go_and_continues_in_a_new_one(root, tmp_path):
    config = tiny_config(root, steps_per_space=2)
    run, controller, events = started(config, tmp_path / "run", paused=True)
    until(lambda: run.status == "paused")
    for _ in range(2):
        controller.step_once()
    until(lambda: run.spaces_done >= 1)
    controller.suspend("the device went to another run")
    assert controller.wait(30) and run.status == "suspended"
    controller._process.join(10)
    assert not controller._process.is_alive()  # nothing to keep: its folder has the checkpoint
    again, controller2, events2 = started(config, tmp_path / "run")
    assert controller2.wait(120) and again.status == "finished"
    assert again.spaces_done == 5 and events2[0].kind.value != "plan"  # continued, not started over
    assert [e.steps_done for e in events2 if isinstance(e, StepEvent)][0] == 3
    controller2.close()


SERVER = """
import sys, time
sys.path[:0] = {paths!r}
from engine.run import remote
from run_fixtures import tiny_config
if __name__ == "__main__":
    run = remote.RemoteRun(tiny_config({root!r}, steps_per_space=100000), {folder!r})
    controller = remote.RemoteController(run, threads=1)
    controller.start()
    while run.status != "running":
        time.sleep(0.05)
    print(controller._process.pid, flush=True)
    time.sleep(600)
"""


def test_a_run_does_not_outlive_a_server_killed_outright(root, tmp_path):
    """SIGKILL leaves the server no time to stop anything: its end of the pipe closes, and the run's
    process stops by itself between two steps (nothing keeps computing for nobody)."""
    import subprocess
    import sys
    from pathlib import Path
    script = tmp_path / "server.py"
    paths = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
    script.write_text(SERVER.format(paths=paths, root=str(root), folder=str(tmp_path / "run")))
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(server.stdout.readline())
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)

        def gone() -> bool:
            try:
                os.kill(child, 0)
                state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (ProcessLookupError, FileNotFoundError):
                return True
            return state == "Z"  # exited, not yet reaped
        until(gone, 60)
    finally:
        server.kill()
