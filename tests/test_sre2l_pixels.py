"""SRe²L's pixel optimiser: Adam (betas 0.5/0.9, eps 1e-8) with a cosine rate to 0 and pixels clamped to
[0, 1] in pixel space after every step, on the Pixel method and a GAN run's last space only; latent spaces
and every other objective keep SGD; a resumed run equals an uninterrupted one."""
import math

import pytest
import torch

from engine.data import dataset_info
from engine.generators import PixelGenerator
from engine.objectives import get_objective
from engine.run import Run, RunConfig, SpaceStartEvent, StepEvent
from engine.run.optimizer import cosine_lr, space_optimizer
from run_fixtures import tiny_config, tiny_proxy

torch.set_num_threads(1)


def test_cosine_rate_by_hand():
    # (1 + cos(pi t / T)) / 2 * lr: lr at 0, lr/2 at T/2, 0 at T; (1 + cos(pi/4)) / 2 at T/4.
    assert cosine_lr(0.1, 0, 8) == 0.1
    assert cosine_lr(0.1, 4, 8) == pytest.approx(0.05, abs=1e-15)
    assert cosine_lr(0.1, 8, 8) == pytest.approx(0.0, abs=1e-15)
    assert cosine_lr(0.1, 2, 8) == pytest.approx(0.1 * (1 + math.sqrt(0.5)) / 2, rel=1e-12)


def test_pixel_bounds_are_unit_range_in_pixel_space():
    """The Pixel method's pixels live in the dataset's normalised space: the clamp is [-m/s, (1-m)/s] per
    channel (SRe²L's own), and those bounds render to exactly -1 and 1."""
    mean, std = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)  # Tiny-ImageNet's (SRe²L)
    G = PixelGenerator(3, 4, 2, mean, std)
    low, high = G.pixel_bounds()
    for c in range(3):
        assert low[0, c, 0, 0].item() == pytest.approx(-mean[c] / std[c], rel=1e-6)
        assert high[0, c, 0, 0].item() == pytest.approx((1 - mean[c]) / std[c], rel=1e-6)
    ws = torch.zeros(1, 1, G.w_dim)
    torch.testing.assert_close(G.synthesize(ws, low.expand(1, 3, 4, 4), 0), -torch.ones(1, 3, 4, 4))
    torch.testing.assert_close(G.synthesize(ws, high.expand(1, 3, 4, 4), 0), torch.ones(1, 3, 4, 4))


def test_adam_steps_follow_the_schedule_and_clamp_per_channel():
    low, high = torch.tensor([-1.0, -2.0]).view(1, 2, 1, 1), torch.tensor([0.5, 3.0]).view(1, 2, 1, 1)
    pixels = torch.zeros(3, 2, 2, 2, requires_grad=True)
    opt = space_optimizer([{"params": [pixels], "lr": 10.0}], 0.5, 4, pixels, get_objective("sre2l").pixel_optimizer,
                          (low, high))
    assert isinstance(opt.opt, torch.optim.Adam)
    assert opt.opt.defaults["betas"] == (0.5, 0.9) and opt.opt.defaults["eps"] == 1e-8
    rates = []
    for t in range(4):
        opt.zero_grad()
        pixels.grad = torch.where(torch.arange(3).view(3, 1, 1, 1) == 0, -1.0, 1.0).expand(3, 2, 2, 2).clone()
        opt.step(t)
        rates.append(opt.opt.param_groups[0]["lr"])
        assert (pixels >= low).all() and (pixels <= high).all()
    assert rates == pytest.approx([cosine_lr(10.0, t, 4) for t in range(4)])
    # A step of 10 pushes image 0 up and the others down: each channel ends on its own bound.
    assert torch.equal(pixels[0].detach(), high[0].expand(2, 2, 2))
    assert torch.equal(pixels[1:].detach(), low.expand(2, 2, 2, 2))


def test_other_objectives_keep_sgd():
    pixels = torch.zeros(2, 1, 2, 2, requires_grad=True)
    for name in ("dm", "dc", "dsa", "tesla"):
        assert get_objective(name).pixel_optimizer is None
        opt = space_optimizer([{"params": [pixels], "lr": 0.1}], 0.5, 4, pixels, get_objective(name).pixel_optimizer)
        assert isinstance(opt.opt, torch.optim.SGD) and opt.opt.defaults["momentum"] == 0.5


def test_sre2l_pixel_rates_are_sre2ls_not_the_generators():
    """Adam's step does not grow with the gradient: SRe²L's rate, no generator-tuned rate, no IPC factor;
    a GAN's [-1, 1] pixel space takes it x 2 std (Fashion-MNIST's std is 0.5: the same rate)."""
    pixel = RunConfig(objective="sre2l", method="pixel", ipc=10)
    assert pixel.learning_rates(None, True, {"sre2l": 5.0})[1] == 0.1
    assert RunConfig(objective="sre2l", method="hpd", ipc=10).learning_rates(None, True, {"sre2l": 5.0})[1] == 0.1
    assert RunConfig(objective="sre2l", method="pixel", lr_f=0.3).learning_rates(pixels=True)[1] == 0.3
    assert RunConfig(objective="sre2l", method="hpd", lr_pixel=0.2).learning_rates(pixels=True)[1] == 0.2
    spec = get_objective("sre2l").pixel_optimizer
    assert spec.rate("imagenette") == 0.25 and spec.rate("imagenet-1k") == 0.25 and spec.rate("tiny-imagenet") == 0.1
    std = dataset_info("cifar10").std
    cifar = RunConfig(objective="sre2l", method="glad", dataset="cifar10", classifier="embedded:fashion-mnist")
    assert cifar.learning_rates(pixels=True)[1] == pytest.approx(0.1 * 2 * sum(std) / 3)


def record_optimisers(run: Run) -> list:
    """Per step: (space, optimiser class, its current rate, min and max of the pixels/f)."""
    seen = []

    def on(e):
        if isinstance(e, (SpaceStartEvent, StepEvent)):
            st = run.state
            seen.append((type(e).__name__, e.space, type(st.opt.opt).__name__, st.opt.opt.param_groups[0]["lr"],
                         float(st.f.detach().min()), float(st.f.detach().max())))
    run.bus.subscribe(on)
    return seen


def finish(run: Run) -> Run:
    while run.step():
        pass
    run.close()
    return run


def test_a_pixel_run_runs_adam_on_the_cosine_and_stays_in_range(root, G, tmp_path):
    config = tiny_config(root, objective="sre2l", method="pixel", ipc=1, steps_per_space=4, init="noise",
                         lr_f=1.0)
    run = Run(config, tmp_path / "run", generator=G, classifier=tiny_proxy())
    seen = record_optimisers(run)
    finish(run)
    starts = [s for s in seen if s[0] == "SpaceStartEvent"]
    steps = [s for s in seen if s[0] == "StepEvent"]
    assert starts[0][2] == "Adam" and starts[0][4] < -1.5  # noise starts outside [0, 1] in pixel space
    # After step t (0-based) the rate of step t has been used; Fashion-MNIST's pixel range is [-1, 1].
    assert [s[3] for s in steps] == pytest.approx([cosine_lr(1.0, t, 4) for t in range(4)])
    assert all(-1.0 <= s[4] and s[5] <= 1.0 for s in steps)
    assert torch.load(tmp_path / "run" / "synthetic.pt", weights_only=True)["images"].abs().max() <= 1.0


def test_a_gan_run_uses_adam_in_its_pixel_space_only(root, G, tmp_path):
    run = Run(tiny_config(root, objective="sre2l", method="hpd", steps_per_space=2), tmp_path / "run",
              generator=G, classifier=tiny_proxy())
    seen = record_optimisers(run)
    finish(run)
    kinds = {space: kind for name, space, kind, *_ in seen if name == "SpaceStartEvent"}
    last = max(kinds)
    assert kinds[last] == "Adam" and set(kinds[s] for s in kinds if s != last) == {"SGD"}
    assert all(-1.0 <= s[4] and s[5] <= 1.0 for s in seen if s[0] == "StepEvent" and s[1] == last)


@pytest.mark.parametrize("method", ["pixel", "hpd"])
def test_a_resumed_run_equals_an_uninterrupted_one(root, G, tmp_path, method):
    """Killed one step before its end (inside the Adam space): the resumed run reruns that space with a fresh
    optimiser at step 0, as the uninterrupted run built it, and ends on the same images and losses."""
    config = tiny_config(root, objective="sre2l", method=method, ipc=1, steps_per_space=3)
    whole = finish(Run(config, tmp_path / "whole", generator=G, classifier=tiny_proxy()))
    killed = Run(config, tmp_path / "killed", generator=G, classifier=tiny_proxy())
    killed.prepare()
    for _ in range(killed.ctx.total_steps - 1):
        killed.step()
    assert isinstance(killed.state.opt.opt, torch.optim.Adam) and not killed.finished
    killed.close()
    del killed
    resumed = finish(Run(config, tmp_path / "killed", generator=G, classifier=tiny_proxy()))
    a = torch.load(whole.run_dir / "synthetic.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "synthetic.pt", weights_only=True)
    assert torch.equal(a["images"], b["images"])
    assert [s.losses for s in whole.state.spaces] == [s.losses for s in resumed.state.spaces]
