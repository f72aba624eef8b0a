import json
import threading
import time

import pytest
import torch

from engine.buffers import BufferConfig, train_buffers
from engine.distance import ClassRelevantDistance
from engine.run import (Run, RunConfig, RunController, SpaceEndEvent, StepEvent, read_events,
                        read_space_file)
from run_fixtures import tiny_config


def make_run(root, tmp_path, G, proxy, name="run", **overrides):
    return Run(tiny_config(root, **overrides), tmp_path / name, generator=G, classifier=proxy)


def finish(run):
    while run.step():
        pass


class ScriptedDistance:
    """Stands in for the CAM distance with fixed values, to force which step is best."""

    def __init__(self, values):
        self.values = list(values)

    def __call__(self, images, labels):
        return self.values.pop(0)


def test_selection_continues_from_the_minimum_distance_step_not_the_last(root, tmp_path, G, proxy):
    run = make_run(root, tmp_path, G, proxy, steps_per_space=4)
    run.prepare()
    run.with_context(distance=ScriptedDistance([5.0, 1.0, 3.0, 2.0, 4.0] + [9.0] * 100))
    seen = {}
    run.bus.subscribe(lambda e: isinstance(e, StepEvent) and e.space == 0 and
                      seen.setdefault(e.step, (run.state.ws.detach().clone(), run.state.f.detach().clone())))
    for _ in range(4):
        run.step()
    saved = read_space_file(run.run_dir, 0)
    assert run.state.spaces[0].best_step == 1 and run.state.spaces[0].distances == [5.0, 1.0, 3.0, 2.0, 4.0]
    assert torch.equal(saved["f"], seen[1][1]) and torch.equal(saved["ws"], seen[1][0])
    assert not torch.equal(saved["f"], seen[4][1])  # the last iterate was a different latent
    # The next space starts from the selected latent, advanced through the space's cuts.
    f = saved["f"]
    with torch.no_grad():
        for k in run.state.spaces[0].cuts:
            f = G.advance(saved["ws"], f, k)
    assert torch.allclose(run.state.f, f) and torch.equal(run.state.ws, saved["ws"])  # the embedded prior has no clip


def test_initial_latent_is_a_candidate(root, tmp_path, G, proxy):
    run = make_run(root, tmp_path, G, proxy, steps_per_space=2)
    run.prepare()
    initial = run.state.f.detach().clone()
    run.with_context(distance=ScriptedDistance([0.5, 1.0, 2.0] + [9.0] * 100))
    run.step(), run.step()
    assert run.state.spaces[0].best_step == 0
    assert torch.equal(read_space_file(run.run_dir, 0)["f"], initial)


def test_hpd_walks_every_space_and_exports(root, tmp_path, G, proxy):
    run = make_run(root, tmp_path, G, proxy)
    finish(run)
    assert [s.cuts for s in run.state.spaces] == [(0, 1), (2, 3), (4, 5), (6,), (7,)]
    assert run.state.steps_done == 15 and run.status != "failed"
    for s in run.state.spaces:
        assert len(s.distances) == 4 and len(s.losses) == 4 and s.losses[-1] is None
        assert s.best_distance == min(s.distances)
    assert run.state.selected_space == 4 and run.state.selection_reason == "last"
    out = torch.load(run.run_dir / "synthetic.pt", weights_only=True)
    assert out["images"].shape == (10, 1, 32, 32) and out["layer"] == 7 and out["space"] == 4
    kinds = [e["kind"] for e in read_events(run.run_dir / "events.jsonl")]
    assert kinds.count("step") == 15 and kinds.count("space_end") == 5 and "exported" in kinds


def test_glad_and_pixel_paths(root, tmp_path, G, proxy):
    glad = make_run(root, tmp_path, G, proxy, name="glad", method="glad")
    finish(glad)
    assert [s.cuts for s in glad.state.spaces] == [(3,)] and glad.state.steps_done == 15  # H-PD's total budget
    pixel = make_run(root, tmp_path, G, proxy, name="pixel", method="pixel", steps_per_space=4)
    finish(pixel)
    assert len(pixel.state.spaces) == 1 and pixel.state.steps_done == 4
    out = torch.load(pixel.run_dir / "synthetic.pt", weights_only=True)
    assert out["images"].shape == (10, 1, 32, 32)


def test_export_round_trip_and_user_selection(root, tmp_path, G, proxy):
    run = make_run(root, tmp_path, G, proxy)
    finish(run)
    run.select_layer(1)
    out = torch.load(run.run_dir / "synthetic.pt", weights_only=True)
    saved = read_space_file(run.run_dir, 1)
    assert out["space"] == 1 and torch.equal(out["images"], saved["images"]) and torch.equal(out["f"], saved["f"])
    assert out["labels"].tolist() == list(range(10))
    # The exported latents render the exported images.
    with torch.no_grad():
        rendered = run.ctx.info.from_generator(G.synthesize(out["ws"], out["f"], out["layer"]))
    assert torch.allclose(rendered, out["images"], atol=1e-5)
    with pytest.raises(ValueError, match="has not finished"):
        run.select_layer(7)


def test_resume_after_kill_ends_like_an_uninterrupted_run(root, tmp_path, G, proxy):
    whole = make_run(root, tmp_path, G, proxy, name="whole")
    finish(whole)
    killed = make_run(root, tmp_path, G, proxy, name="killed")
    for _ in range(7):  # two spaces and one step of the third, then the process "dies"
        killed.step()
    killed.close()  # what the end of the killed process does
    del killed
    resumed = make_run(root, tmp_path, G, proxy, name="killed")
    resumed.prepare()
    assert resumed.state.space_index == 2 and resumed.state.steps_done == 6
    finish(resumed)
    a = torch.load(whole.run_dir / "synthetic.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "synthetic.pt", weights_only=True)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["ws"], b["ws"])
    assert [s.distances for s in whole.state.spaces] == [s.distances for s in resumed.state.spaces]
    steps = [e for e in read_events(resumed.run_dir / "events.jsonl") if e["kind"] == "step"]
    assert [e["steps_done"] for e in steps] == list(range(1, 16))  # the interrupted space's events were replaced


def test_controller_pause_resume_step_stop(root, tmp_path, G, proxy):
    run = make_run(root, tmp_path, G, proxy, steps_per_space=50)
    ctl = RunController(run)
    ctl.start(paused=True)
    deadline = time.time() + 60
    while run.status != "paused" and time.time() < deadline:
        time.sleep(0.05)
    assert run.status == "paused" and run.state.steps_done == 0
    ctl.step_once()
    while run.state.steps_done < 1 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert run.state.steps_done == 1  # exactly one step while paused
    ctl.resume()
    while run.state.steps_done < 3 and time.time() < deadline:
        time.sleep(0.05)
    ctl.pause()
    time.sleep(0.3)
    held = run.state.steps_done
    time.sleep(1.0)
    assert run.state.steps_done == held and run.status == "paused"
    ctl.stop()
    assert ctl.wait(30) and run.status == "stopped"


def test_distance_zero_for_identical_sets_and_grows_with_perturbation(root, proxy):
    from engine.data import load_dataset
    data = load_dataset("fashion-mnist", "train", root)
    x, y = data.normalized()[:100], data.labels[:100]
    d = ClassRelevantDistance(proxy, x, y, 10)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    assert d(x, y) == pytest.approx(0.0, abs=1e-10)
    small, large = d(x + 0.05 * noise, y), d(x + 0.5 * noise, y)
    assert 0 < small < large


@pytest.mark.parametrize("overrides, message", [
    ({"ipc": 0}, "--ipc must be at least 1"),
    ({"method": "gan"}, "unknown method 'gan'"),
    ({"selection": "best"}, "unknown selection 'best'"),
    ({"method": "pixel", "init": "avg"}, "GAN latents"),
    ({"objective": "tesla"}, "TESLA needs expert trajectories"),
])
def test_bad_config_fails_at_once(root, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(root, **overrides)


def test_bad_cut_range_fails_before_any_work(root, tmp_path, G, proxy):
    run = make_run(root, tmp_path, G, proxy, first_cut=9)
    with pytest.raises(ValueError, match="does not fit this generator's cuts 0..7"):
        run.prepare()
    assert not run.run_dir.exists()


def test_export_command_and_cam(root, tmp_path, G, proxy):
    from cli_helpers import engine_cli
    from engine.cam import cam_heatmaps, overlay
    run = make_run(root, tmp_path, G, proxy, steps_per_space=1)
    finish(run)
    res = engine_cli("export", str(run.run_dir), "--layer", "2")
    assert res.returncode == 0, res.stderr
    out = torch.load(run.run_dir / "synthetic.pt", weights_only=True)
    assert out["space"] == 2 and out["layer"] == 4
    bad = engine_cli("export", str(run.run_dir), "--layer", "9")
    assert bad.returncode == 2 and "has not finished" in bad.stderr
    images = run.ctx.info.to_generator(out["images"])
    maps = cam_heatmaps(proxy, images, out["labels"])
    assert maps.shape == (10, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    assert all(p.grad is None for p in proxy.parameters())
    rgb = overlay(run.ctx.info.denormalize(out["images"]), maps)
    assert rgb[0].shape == (32, 32, 3) and rgb[0].dtype.name == "uint8"


def test_advance_keeps_the_selected_images_across_space_boundaries(root, tmp_path, G, proxy):
    run = make_run(root, tmp_path, G, proxy)
    finish(run)
    for a, b in zip(run.state.spaces, run.state.spaces[1:]):
        # The next space starts from the previous space's selection, so its step 0 renders the same set.
        assert b.distances[0] == pytest.approx(a.best_distance, rel=1e-4, abs=1e-7)


def test_feature_clip_is_the_generators_unless_set(root, tmp_path, G, proxy):
    assert G.feature_clip is None
    run = make_run(root, tmp_path, G, proxy, f_clip=0.01, steps_per_space=1)
    run.prepare()
    assert float(run.state.f.abs().max()) <= 0.01


@pytest.fixture(scope="module")
def expert_buffers(root, tmp_path_factory):
    """Two real experts of the run's matching network (ConvNet-3, width 128) on the fake data."""
    out = tmp_path_factory.mktemp("buffers")
    train_buffers(BufferConfig(experts=2, epochs=2, batch=64, data_root=str(root)), out, progress=False,
                  log=lambda _: None)
    return str(out)


def test_tesla_walks_every_space_learns_its_lr_and_resumes_like_an_uninterrupted_run(root, tmp_path, G, proxy,
                                                                                     expert_buffers):
    tesla = dict(objective="tesla", buffers=expert_buffers, steps_per_space=2, syn_steps=3, expert_epochs=1,
                 max_start_epoch=2)
    whole = make_run(root, tmp_path, G, proxy, name="whole", **tesla)
    finish(whole)
    assert whole.state.steps_done == 10 and whole.status != "failed"
    assert all(0 < loss < 10 for s in whole.state.spaces for loss in s.losses[:-1])
    assert whole.ctx.objective.syn_lr != 0.01  # the student's learning rate is learned, across spaces
    # The export carries it in DD-Ranking's layout (lr.pt, read as syn_lr) and in synthetic.pt.
    lr = torch.load(whole.run_dir / "lr.pt", map_location="cpu")
    assert lr.dtype == torch.float32 and lr.item() == pytest.approx(whole.ctx.objective.syn_lr, rel=1e-6)
    assert torch.load(whole.run_dir / "synthetic.pt", weights_only=True)["syn_lr"] == whole.ctx.objective.syn_lr
    killed = make_run(root, tmp_path, G, proxy, name="killed", **tesla)
    for _ in range(5):
        killed.step()
    killed.close()  # what the end of the killed process does
    del killed
    resumed = make_run(root, tmp_path, G, proxy, name="killed", **tesla)
    finish(resumed)
    a = torch.load(whole.run_dir / "synthetic.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "synthetic.pt", weights_only=True)
    assert torch.equal(a["images"], b["images"]) and resumed.ctx.objective.syn_lr == whole.ctx.objective.syn_lr
    assert [s.losses for s in whole.state.spaces] == [s.losses for s in resumed.state.spaces]


def test_tesla_trajectories_too_short_fail_before_any_work(root, tmp_path, G, proxy, expert_buffers):
    run = make_run(root, tmp_path, G, proxy, objective="tesla", buffers=expert_buffers)  # needs 7 epochs
    with pytest.raises(ValueError, match="max_start_epoch 5 is too large"):
        run.prepare()
    assert not run.run_dir.exists()


def test_pixel_space_of_a_gan_run_takes_the_pixel_rate(root, tmp_path, G, proxy):
    run = make_run(root, tmp_path, G, proxy, steps_per_space=1, lr_w=0.02, lr_f=0.3)
    rates = []
    run.bus.subscribe(lambda e: rates.append((e.space, e.lr_w, e.lr_f)) if isinstance(e, StepEvent) else None)
    finish(run)
    # The embedded prior's DM pixel-space rate (tuned_pixel_lrs), not the Pixel method's 1.0
    assert rates[:4] == [(i, 0.02, 0.3) for i in range(4)] and rates[4] == (4, 0.02, 0.1)
    assert [(s["lr_w"], s["lr_f"]) for s in json.loads((run.run_dir / "run.json").read_text())["spaces"]][3:] == [
        (0.02, 0.3), (0.02, 0.1)]
    pixel = make_run(root, tmp_path, G, proxy, name="pixel", method="pixel", steps_per_space=1, lr_f=0.3)
    assert pixel.config.learning_rates(pixels=True)[1] == 0.3
    tuned = RunConfig(objective="dsa", lr_pixel=0.5).learning_rates({"dsa": (1e-4, 0.2)}, pixels=False)
    assert tuned == (1e-4, 0.2)
    assert RunConfig(objective="dsa", lr_pixel=0.5).learning_rates({"dsa": (1e-4, 0.2)}, pixels=True) == (1e-4, 0.5)
    assert RunConfig(objective="dsa").learning_rates(None, True, {"dsa": 0.05}) == (0.001, 0.05)
    # The tuned pixel rate is an IPC 1 rate: at IPC 10 each image's gradient is a mean over 10x the images
    assert RunConfig(objective="dsa", ipc=10).learning_rates(None, True, {"dsa": 0.05}) == (0.001, pytest.approx(0.5))
    assert RunConfig(objective="dsa", ipc=10).learning_rates(None, True, {"dm": 0.05}) == (0.001, 0.1)
    assert RunConfig(objective="dsa").learning_rates(None, True, {"dm": 0.05}) == (0.001, 0.1)  # the Pixel rate
    assert RunConfig(objective="dsa", lr_pixel=0.5).learning_rates(None, True, {"dsa": 0.05}) == (0.001, 0.5)


def test_default_init_averages_latents_only_at_ipc_1(root, tmp_path, G, proxy):
    assert [RunConfig(ipc=1).init_kind, RunConfig(ipc=10).init_kind, RunConfig(ipc=10, init="avg").init_kind,
            RunConfig(method="pixel", ipc=10).init_kind] == ["avg", "random", "avg", "real"]

    def within_class_spread(**overrides) -> float:
        run = make_run(root, tmp_path, G, proxy, name=str(overrides), ipc=3, **overrides)
        run.prepare()
        per_class = run.state.ws.detach().reshape(10, 3, -1)  # labels are class-major: 0,0,0,1,1,1,...
        assert run.ctx.labels.tolist() == [c for c in range(10) for _ in range(3)]
        return per_class.std(1).mean().item()

    # Averaged latents of one class nearly coincide (20 noises each here; 1000 by default): near-copies.
    assert within_class_spread() > 3 * within_class_spread(init="avg")
