"""Compare in lockstep and the studio's evaluation: runs queued together start together and step in turn,
the device is free only when both are done, and an evaluated pair gets a table, a difference and a verdict."""
from __future__ import annotations

import threading
import time

import pytest

from engine import StepEvent, Turns
from hpd_app.devicequeue import DeviceQueue
from hpd_app.evaluation import EvalSettings, EvalStatus, table, verdict
from hpd_app.jobs import Components, JobRegistry
from run_fixtures import fake_root, tiny_generator, tiny_proxy
from test_app_fixtures import TINY


class FakeJob:
    def __init__(self, name: str, log: list, device: str = "cpu"):
        self.name, self.device, self._log = name, device, log

    def launch(self) -> None:
        self._log.append(self.name)


def test_a_group_takes_the_device_together_and_frees_it_when_all_are_done():
    log: list = []
    q = DeviceQueue()
    first = FakeJob("first", log)
    q.submit(first)
    a, b, later = FakeJob("a", log), FakeJob("b", log), FakeJob("later", log)
    q.submit_together([a, b])
    q.submit(later)
    assert log == ["first"] and q.waiting() == 3 and q.position(a) == q.position(b) == 1 and q.position(later) == 2
    q.release(first)
    assert log == ["first", "a", "b"] and q.waiting() == 1  # both members at once
    q.release(a)
    assert log == ["first", "a", "b"]  # b still holds the device
    q.release(b)
    assert log == ["first", "a", "b", "later"]


def test_a_cancelled_member_leaves_its_group_and_the_rest_still_starts():
    log: list = []
    q = DeviceQueue()
    q.submit(FakeJob("first", log))
    a, b = FakeJob("a", log), FakeJob("b", log)
    q.submit_together([a, b])
    assert q.cancel(a) and not q.cancel(a)
    assert q.waiting() == 1
    q.release(next(iter(q._active.values())))
    assert log == ["first", "b"]
    with pytest.raises(ValueError, match="same device"):
        q.submit_together([FakeJob("x", log, "cpu"), FakeJob("y", log, "cuda:0")])


def test_turns_alternate_two_threads_however_their_steps_differ():
    turns, order = Turns(), []
    start = threading.Barrier(2)

    def worker(name: str, step_s: float) -> None:
        start.wait()
        for _ in range(6):
            with turns.turn():
                order.append(name)
                time.sleep(step_s)

    threads = [threading.Thread(target=worker, args=("fast", 0.001)),
               threading.Thread(target=worker, args=("slow", 0.02))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # After the first turn each thread waits behind the other: strict alternation (a plain lock lets the
    # fast thread take it again at once, most of the time).
    assert len(order) == 12
    assert all(order[i] != order[i + 1] for i in range(11)), order


@pytest.fixture
def registry(tmp_path):
    components = Components(tiny_generator(), tiny_proxy(), str(fake_root(tmp_path / "fm")))
    settings = EvalSettings(models=("convnet", "alexnet"), repeats=2, epochs=2)
    reg = JobRegistry(tmp_path / "runs", components, evaluation=settings)
    yield reg
    reg.shutdown()


def wait(pred, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_compare_steps_both_runs_in_turn_then_evaluates_both_with_a_verdict(tmp_path):
    order: list[str] = []  # the run thread ("run:<folder>") of every step, in the order they happened

    def listener(event) -> None:
        if isinstance(event, StepEvent):
            order.append(threading.current_thread().name.removeprefix("run:"))

    components = Components(tiny_generator(), tiny_proxy(), str(fake_root(tmp_path / "fm")), (listener,))
    settings = EvalSettings(models=("convnet", "alexnet"), repeats=2, epochs=2)
    reg = JobRegistry(tmp_path / "runs", components, evaluation=settings)
    try:
        ids = reg.start_together([TINY | {"method": "hpd"}, TINY | {"method": "glad"}], "me", evaluate=True)
        wait(lambda: all(reg.job(r, "me").snapshot.state == "finished" for r in ids))
        hpd, glad = ids
        assert set(order) == {hpd, glad}
        # In turn: from the moment the later one (it may load for longer) took its first step until the
        # first of them finished, the two alternated strictly.
        later = order[0] == hpd and glad or hpd
        start = order.index(later) - 1
        end = min(len(order) - 1 - order[::-1].index(r) for r in ids)
        window = order[start:end + 1]
        assert len(window) >= 4 and all(window[i] != window[i + 1] for i in range(len(window) - 1)), order
        wait(lambda: all((reg.evaluation(r, "me") or EvalStatus("x")).state == "done" for r in ids))
        results = [reg.evaluation(r, "me") for r in ids]
        for status in results:
            assert set(status.result["models"]) == {"convnet", "alexnet"} and status.result["repeats"] == 2
            assert status.result["cross_arch_models"] == ["alexnet"]
        md = table([("H-PD", results[0]), ("GLaD", results[1])])
        assert "| model | H-PD | GLaD | H-PD − GLaD |" in md and "convnet (backbone)" in md
        diff = 100 * (results[0].result["cross_arch_mean"] - results[1].result["cross_arch_mean"])
        assert f"**{diff:+.1f}**" in md
        assert ("No clear winner" in md) or ("is better" in md)
        # Asking again for the same set returns its finished evaluation, trains nothing.
        assert reg.evaluate(hpd, "me").state == "done"
    finally:
        reg.shutdown()


def test_evaluate_refuses_a_run_still_going_and_someone_elses(registry):
    rid = registry.start(TINY | {"steps_per_space": 50}, "me")
    wait(lambda: registry.job(rid, "me").snapshot.state in ("running", "paused"))
    with pytest.raises(ValueError, match="still going"):
        registry.evaluate(rid, "me")
    with pytest.raises(LookupError, match="no run"):
        registry.evaluate(rid, "other")
    registry.job(rid, "me").stop()


def _result(means: dict[str, list[float]], backbone: str = "convnet") -> dict:
    models = {m: {"mean": sum(v) / len(v), "std": (max(v) - min(v)) / 2 ** 0.5, "accuracies": v}
              for m, v in means.items()}
    others = [m for m in models if m != backbone]
    return {"models": models, "backbone": backbone, "cross_arch_models": others,
            "cross_arch_mean": sum(models[m]["mean"] for m in others) / len(others)}


def test_the_verdict_weighs_the_difference_against_the_networks_spread():
    a = _result({"convnet": [0.70, 0.71], "alexnet": [0.60, 0.62], "vgg11": [0.65, 0.64]})
    b = _result({"convnet": [0.72, 0.73], "alexnet": [0.50, 0.52], "vgg11": [0.55, 0.54]})
    assert verdict(a, b, "H-PD", "GLaD").startswith("**H-PD is better** by 10.0 points over GLaD")
    assert verdict(b, a, "GLaD", "H-PD").startswith("**H-PD is better**")
    close = _result({"convnet": [0.70, 0.71], "alexnet": [0.59, 0.63], "vgg11": [0.64, 0.66]})
    # cross-arch means 62.75 vs 63.0; 2 SE = 2 * sqrt(1.0 + 0.25 + 4.0 + 1.0) / 2 models = 2.5 points
    assert verdict(a, close, "H-PD", "GLaD").startswith("**No clear winner:** H-PD − GLaD = -0.3 points")
    assert "±2.5 is twice its standard error" in verdict(a, close, "H-PD", "GLaD")
    alone = _result({"convnet": [0.7, 0.7], "alexnet": [0.6, 0.6]}) | {"cross_arch_mean": None}
    assert verdict(alone, a, "x", "y").startswith("No cross-architecture mean")


def test_one_owner_holds_a_bounded_number_of_evaluations_and_asking_twice_queues_once(tmp_path):
    from hpd_app.jobs import ServerLimits
    components = Components(tiny_generator(), tiny_proxy(), str(fake_root(tmp_path / "fm")))
    reg = JobRegistry(tmp_path / "runs", components, limits=ServerLimits(runs_per_owner=2),
                      evaluation=EvalSettings(models=("convnet",), repeats=1, epochs=1))
    try:
        ids = []
        for k in range(3):  # one after the other: two runs at once are this owner's most
            ids.append(reg.start(TINY | {"steps_per_space": 1, "seed": k}, "me"))
            wait(lambda: reg.job(ids[-1], "me").snapshot.state == "finished" and not reg.job(ids[-1], "me").active)
        blocker = FakeJob("someone else's run", [])
        reg._queue.submit(blocker)  # the device is busy: evaluations wait in line
        assert reg.evaluate(ids[0], "me").state == "queued"
        assert reg.evaluate(ids[0], "me").state == "queued" and reg._queue.waiting() == 1  # not queued twice
        assert reg.evaluate(ids[1], "me").state == "queued"
        with pytest.raises(ValueError, match="2 evaluations queued or running"):
            reg.evaluate(ids[2], "me")
        reg._queue.release(blocker)
        wait(lambda: all(reg.evaluation(r, "me").state == "done" for r in ids[:2]))
    finally:
        reg.shutdown()


def test_an_evaluation_runs_in_a_child_whose_death_fails_it_and_frees_the_device(tmp_path):
    """Killed mid-way (as the kernel's out-of-memory killer would), the child takes only its evaluation
    down: the server says so in one sentence, the device is free, and Evaluate again resumes and finishes."""
    import os
    import signal

    components = Components(tiny_generator(), tiny_proxy(), str(fake_root(tmp_path / "fm")))
    reg = JobRegistry(tmp_path / "runs", components,
                      evaluation=EvalSettings(models=("convnet", "alexnet"), repeats=2, epochs=40))
    try:
        rid = reg.start(TINY | {"steps_per_space": 1}, "me")
        wait(lambda: reg.job(rid, "me").snapshot.state == "finished" and not reg.job(rid, "me").active)
        reg.evaluate(rid, "me")
        wait(lambda: reg.evaluation(rid, "me").done > 0)  # training, in its own process
        child = reg._evals[rid]._process
        assert child.pid != os.getpid() and child.is_alive()
        os.kill(child.pid, signal.SIGKILL)
        wait(lambda: reg.evaluation(rid, "me").state == "failed")
        message = reg.evaluation(rid, "me").message
        assert "ended unexpectedly (exit code -9)" in message and "press Evaluate to resume" in message
        assert reg._queue.waiting() == 0 and not reg._queue._active
        assert reg.evaluate(rid, "me").state in ("queued", "running")
        wait(lambda: reg.evaluation(rid, "me").state == "done")
        assert set(reg.evaluation(rid, "me").result["models"]) == {"convnet", "alexnet"}
    finally:
        reg.shutdown()


def test_an_evaluation_that_fails_in_its_child_reports_the_engines_sentence(tmp_path):
    from hpd_app.evaluation import EvalJob

    class Queue:
        released = []

        def release(self, job):
            self.released.append(job)

    queue = Queue()
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    job = EvalJob(empty, "cpu", EvalSettings(models=("convnet",), repeats=1, epochs=1).suite(32), queue)
    job.launch()
    wait(lambda: job.status.state == "failed")
    assert "synthetic.pt" in job.status.message and "\n" not in job.status.message
    wait(lambda: queue.released == [job])
    assert not job._process.is_alive() and job._process.exitcode == 0
