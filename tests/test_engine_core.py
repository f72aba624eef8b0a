"""The engine core: paired random streams, the distance on every run, events that describe the run,
isolated subscribers, and commands that never wait for a step (tiny real components, fake data)."""
from __future__ import annotations

import hashlib
import json
import time

import pytest
import torch

from engine.run import (ErrorEvent, PlanEvent, Run, RunController, SpaceStartEvent, StepEvent, read_events)
from engine.streams import Streams, stream_seed
from run_fixtures import tiny_config, tiny_generator, tiny_proxy


def digest(x) -> str:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().contiguous().numpy().tobytes()
    return hashlib.sha256(x if isinstance(x, bytes) else repr(x).encode()).hexdigest()[:16]


class Trace:
    """What each random consumer of a run produced, step by step: the real batches the objective drew
    (hashed) and, after every step, the state of every stream but the distance's."""

    def __init__(self, run: Run):
        run.prepare()
        self.initial = (digest(run.state.ws), digest(run.state.f))
        self.real: list[str] = []
        self.streams: list[dict] = []
        sampler = run.ctx.sampler
        draw = sampler.sample

        def sample(c, n):
            x = draw(c, n)
            self.real.append(digest(x))
            return x
        sampler.sample = sample
        self._run = run
        run.bus.subscribe(self._on_event)

    def _on_event(self, e) -> None:
        if isinstance(e, StepEvent):
            states = self._run.ctx.streams.state_dict()["streams"]
            self.streams.append({k: digest(v) for k, v in states.items() if k != "distance"})


def traced(root, tmp_path, G, proxy, name, **overrides) -> tuple[Run, Trace]:
    run = Run(tiny_config(root, **overrides), tmp_path / name, generator=G, classifier=proxy)
    trace = Trace(run)
    while run.step():
        pass
    return run, trace


def test_streams_are_named_independent_and_restorable():
    a, b = Streams(0), Streams(0)
    x = torch.rand(4, generator=a["real"])
    torch.rand(100, generator=b["nets"])  # drawing from another stream does not move "real"
    assert torch.equal(x, torch.rand(4, generator=b["real"]))
    assert stream_seed(0, "real") != stream_seed(0, "nets") != stream_seed(1, "real")
    saved = a.state_dict()
    y = torch.rand(3, generator=a["dsa"])
    c = Streams(0)
    c.load_state_dict(saved)
    assert torch.equal(y, torch.rand(3, generator=c["dsa"]))
    with pytest.raises(ValueError, match="belong to seed 0, not 1"):
        Streams(1).load_state_dict(saved)
    with pytest.raises(ValueError, match="seed must be between 0 and"):
        Streams(-1)


def test_selection_bases_and_the_distance_switch_leave_every_other_draw_identical(root, tmp_path, G, proxy):
    """The same run with one rule changed: same initial latents, same real batches, networks and DSA
    parameters at every step (DM uses DSA), whichever latent each space keeps and whether the
    distance is measured at all."""
    traces = {basis: traced(root, tmp_path, G, proxy, basis, selection=basis)[1] for basis in ("distance", "loss", "last")}
    traces["no distance"] = traced(root, tmp_path, G, proxy, "nodist", selection="last", distance=False)[1]
    first = traces["distance"]
    assert len(first.real) == 15 * 10 and len(first.streams) == 15  # 15 steps x 10 classes
    for name, trace in traces.items():
        assert trace.initial == first.initial, name
        assert trace.real == first.real, name
        assert trace.streams == first.streams, name
    last = json.loads((tmp_path / "last" / "run.json").read_text())["spaces"]
    assert [s["best_step"] for s in last] == [3] * 5  # only which latent each space keeps differs


def test_glad_hpd_and_pixel_at_one_seed_draw_the_same_real_batches(root, tmp_path, G, proxy):
    _, hpd = traced(root, tmp_path, G, proxy, "hpd", selection="last")
    _, glad = traced(root, tmp_path, G, proxy, "glad", method="glad")
    _, pixel = traced(root, tmp_path, G, proxy, "pixel", method="pixel", steps_per_space=15)
    assert len(hpd.real) == len(glad.real) == len(pixel.real) == 150
    assert hpd.real == glad.real == pixel.real
    assert hpd.streams == glad.streams  # networks and DSA draws too
    # Pixel starts from real images, GAN methods from mapped noise: only their "latents" streams differ.
    assert [{k: v for k, v in s.items() if k != "latents"} for s in pixel.streams] == [
        {k: v for k, v in s.items() if k != "latents"} for s in hpd.streams]
    assert hpd.initial[0] == glad.initial[0]  # the same W+ latents (f differs: it enters other cuts)
    assert hpd.initial != pixel.initial


def test_every_method_and_basis_measures_the_distance_at_every_step(root, tmp_path, G, proxy):
    for name, overrides in {"glad": dict(method="glad", steps_per_space=1), "pixel": dict(method="pixel"),
                            "last": dict(selection="last", steps_per_space=1)}.items():
        run = Run(tiny_config(root, **overrides), tmp_path / f"d-{name}", generator=G, classifier=proxy)
        while run.step():
            pass
        meta = json.loads((run.run_dir / "run.json").read_text())
        distances = [d for s in meta["spaces"] for d in s["distances"]]
        assert meta["distance_measured"] and distances and None not in distances, name
        steps = [e for e in read_events(run.run_dir / "events.jsonl") if e["kind"] == "step"]
        assert all(e["distance"] is not None for e in steps), name
    off = Run(tiny_config(root, selection="last", distance=False, steps_per_space=1), tmp_path / "off",
              generator=G, classifier=proxy)
    while off.step():
        pass
    meta = json.loads((off.run_dir / "run.json").read_text())
    assert not meta["distance_measured"] and "--no-distance" in meta["distance_note"]
    assert all(d is None for s in meta["spaces"] for d in s["distances"])


def test_the_first_event_announces_the_plan(root, tmp_path, G, proxy):
    run = Run(tiny_config(root, steps_per_space=1, ipc=2), tmp_path / "plan", generator=G, classifier=proxy)
    while run.step():
        pass
    events = read_events(run.run_dir / "events.jsonl")
    plan = events[0]
    assert plan["kind"] == "plan" and plan["seq"] == 1
    assert [s["cuts"] for s in plan["spaces"]] == [[0, 1], [2, 3], [4, 5], [6], [7]]
    assert plan["spaces"][-1]["name"] == G.layers[7].name and plan["spaces"][0]["shape"] == list(G.layers[0].shape)
    assert (plan["ipc"], plan["steps_per_space"], plan["method"], plan["objective"], plan["selection"]) == (
        2, 1, "hpd", "dm", "distance")
    assert len(plan["classes"]) == 10 and plan["mean"] == [0.5] and plan["std"] == [0.5] and plan["distance"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # the bus stamps, in order
    starts = [e for e in events if e["kind"] == "space_start"]
    assert [e["space"] for e in starts] == list(range(5)) and all(e["distance"] is not None for e in starts)
    assert all((run.run_dir / e["preview"]).is_file() for e in starts)  # a step-0 preview of every space


def test_a_subscriber_that_raises_is_reported_and_the_run_goes_on(root, tmp_path, G, proxy):
    run = Run(tiny_config(root, steps_per_space=1), tmp_path / "sub", generator=G, classifier=proxy)
    seen = []

    def broken(event):
        if isinstance(event, StepEvent):
            raise RuntimeError("listener bug")

    run.bus.subscribe(broken)
    run.bus.subscribe(seen.append)  # subscribed after the broken one: still gets every event
    ctl = RunController(run)
    ctl.start()
    assert ctl.wait(120)
    assert run.status == "finished"
    errors = [e for e in seen if isinstance(e, ErrorEvent)]
    assert len(errors) == 5 and all(e.source == "subscriber" and "listener bug" in e.message for e in errors)
    assert sum(isinstance(e, StepEvent) for e in seen) == 5
    assert isinstance(seen[0], PlanEvent) and any(isinstance(e, SpaceStartEvent) for e in seen)


def test_a_damaged_checkpoint_is_one_sentence_and_nothing_changes(root, tmp_path, G, proxy):
    run = Run(tiny_config(root, steps_per_space=1), tmp_path / "dmg", generator=G, classifier=proxy)
    run.step()
    run.close()
    (run.run_dir / "checkpoint.pt").write_bytes(b"\x00not a checkpoint" * 10)
    before = {p.name: p.read_bytes() for p in run.run_dir.iterdir() if p.is_file()}
    again = Run(tiny_config(root, steps_per_space=1), tmp_path / "dmg", generator=G, classifier=proxy)
    with pytest.raises(ValueError, match=r"checkpoint.pt is damaged \(\w+\); delete it") as err:
        again.prepare()
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)
    assert {p.name: p.read_bytes() for p in run.run_dir.iterdir() if p.is_file()} == before


def test_a_second_writer_of_a_live_folder_is_refused(root, tmp_path, G, proxy):
    run = Run(tiny_config(root, steps_per_space=1), tmp_path / "busy", generator=G, classifier=proxy)
    run.prepare()
    other = Run(tiny_config(root, steps_per_space=1), tmp_path / "busy", generator=G, classifier=proxy)
    with pytest.raises(ValueError, match="is being written by another run right now"):
        other.prepare()
    run.close()
    other.prepare()  # once the first writer is gone, the folder resumes
    other.close()


# ------------------------------------------------------------------ commands that never wait
STEP_S = 5.0


class Slow:
    """The tiny generator made slow: every rendering sleeps, so one step takes at least STEP_S seconds."""

    def __init__(self, G, delay: float):
        self.G, self.delay = G, delay

    def __enter__(self):
        render = self.G.synthesize

        def slow(*args, **kwargs):
            time.sleep(self.delay)
            return render(*args, **kwargs)
        self.G.synthesize = slow
        return self.G

    def __exit__(self, *exc):
        del self.G.synthesize  # back to the class's method


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_commands_return_at_once_while_a_slow_step_runs(root, tmp_path):
    """A step renders twice (the gradient pass, then the distance's); at 2.5 s each a step takes 5 s."""
    with Slow(tiny_generator(), STEP_S / 2) as G:
        run = Run(tiny_config(root, steps_per_space=1, preview_every=100), tmp_path / "slow", generator=G,
                  classifier=tiny_proxy())
        ctl = RunController(run)
        ctl.start()
        wait_until(lambda: run.state.space_index >= 1 and run.status == "running", 60)  # space 0 done, step 2 in flight
        future, took = timed(ctl.select_layer, 0)
        assert took < 0.1
        _, took = timed(ctl.pause)
        assert took < 0.1 and ctl.requested == "pause"
        paused_at = run.state.steps_done
        wait_until(lambda: run.status == "paused", 2 * STEP_S + 5)  # the step in flight ends, no other
        assert run.state.steps_done <= paused_at + 1 and ctl.requested is None
        assert future.done() and future.exception() is None and run.state.selected_space == 0
        with pytest.raises(ValueError, match="has not finished yet"):
            ctl.select_layer(4)  # refused at once, not queued
        ctl.resume()
        wait_until(lambda: run.status == "running", 10)
        _, took = timed(ctl.stop)
        assert took < 0.1
        stopping_at = run.state.steps_done
        assert ctl.wait(2 * STEP_S + 5) and run.status == "stopped"
        assert run.state.steps_done <= stopping_at + 1
        # With no run thread left, commands apply in the caller's thread at once.
        assert ctl.select_layer(0).result(timeout=0) is None and run.state.selection_reason == "user"


def test_a_new_objective_is_one_registration_and_runs(root, tmp_path, G, proxy):
    """A toy objective (pull every image to mid-grey) registered in one place runs H-PD end to end."""
    from engine import objectives
    from engine.objectives.context import PerIterationObjective

    class Grey(PerIterationObjective):
        updates_per_iteration = 1

        def start_iteration(self) -> None:
            pass

        def loss(self, syn, labels):
            return (syn ** 2).mean()

        def after_update(self, current, labels, update) -> None:
            pass

    spec = objectives.ObjectiveSpec(name="grey", label="GREY: a test objective", params=dict, uses_dsa=False,
                                    latent_lr=(0.01, 0.1), pixel_lr=0.5, steps_per_space=2,
                                    build=lambda ctx, ipc, **_: Grey(), options=lambda config: {})
    with objectives.registered(spec):
        run = Run(tiny_config(root, objective="grey", steps_per_space=None), tmp_path / "grey", generator=G,
                  classifier=proxy)
        while run.step():
            pass
    losses = [loss for s in run.state.spaces for loss in s.losses if loss is not None]
    assert run.state.steps_done == 10 and losses[-1] < losses[0]  # its own steps per space, and it optimises
    # Its own rates: the prior's tuned ones belong to other objectives; the pixel space takes its pixel rate.
    assert [(s.lr_w, s.lr_f) for s in run.state.spaces] == [(0.01, 0.1)] * 4 + [(0.01, 0.5)]


def test_slow_steps_preview_by_time_too(root, tmp_path, G, proxy, monkeypatch):
    """Previews every `preview_every` steps, and at least every PREVIEW_EVERY_S seconds (here: always)."""
    from engine.run import loop
    run = Run(tiny_config(root, steps_per_space=3, preview_every=100), tmp_path / "by-step", generator=G,
              classifier=proxy)
    while run.step():
        pass
    by_step = [e for e in read_events(run.run_dir / "events.jsonl") if e["kind"] == "step" and e["preview"]]
    assert [e["step"] for e in by_step] == [3] * 5  # only each space's last step
    monkeypatch.setattr(loop, "PREVIEW_EVERY_S", 0.0)
    run = Run(tiny_config(root, steps_per_space=3, preview_every=100), tmp_path / "by-time", generator=G,
              classifier=proxy)
    while run.step():
        pass
    by_time = [e for e in read_events(run.run_dir / "events.jsonl") if e["kind"] == "step" and e["preview"]]
    assert len(by_time) == 15
