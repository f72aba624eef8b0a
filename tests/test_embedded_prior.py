"""The embedded Fashion-MNIST prior: layer laws, the shipped asset, its errors, and resumable training."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from engine.cli import main as cli_main
from engine.generators.embedded import (ASSET_DIR, EMBEDDED_PRIORS, EmbeddedConfig, EmbeddedGenerator,
                                        PriorAssetError, load_embedded, prior_asset)
from engine.prior import TrainConfig, train_prior
from engine.prior.checkpoint import load_checkpoint
from engine.prior.discriminator import ProjectionDiscriminator, minibatch_std
from engine.prior.losses import mode_seeking

SMALL = EmbeddedConfig(z_dim=8, w_dim=16, widths=(16, 12, 8, 4), init_seed=3)


@pytest.fixture(scope="module")
def small_g() -> EmbeddedGenerator:
    return EmbeddedGenerator(SMALL)


def _ws(G: EmbeddedGenerator, n: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=gen)
    c = F.one_hot(torch.arange(n) % G.num_classes, G.num_classes).float()
    return G.mapping(z, c)


def test_cuts_are_named_shaped_and_end_at_pixels(small_g):
    assert len(small_g.layers) >= 8
    assert [cut.index for cut in small_g.layers] == list(range(len(small_g.layers)))
    assert small_g.layers[0].name == "b4.conv1 4x4x16"
    assert small_g.layers[-1].shape == (1, 32, 32) and small_g.layers[-1].name.startswith("pixels")
    ws = _ws(small_g)
    assert ws.shape == (3, small_g.num_ws, small_g.w_dim)
    for cut in small_g.layers:
        assert small_g.features(ws, cut.index).shape == (3, *cut.shape)


def test_synthesize_from_every_cut_equals_forward(small_g):
    ws = _ws(small_g)
    full = small_g(ws)
    assert full.abs().max() <= 1 and full.std() > 0
    for k in range(len(small_g.layers)):
        torch.testing.assert_close(small_g.synthesize(ws, small_g.features(ws, k), k), full, atol=1e-6, rtol=0)


def test_advance_equals_next_features(small_g):
    ws = _ws(small_g)
    for k in range(small_g.pixel_cut):
        torch.testing.assert_close(small_g.advance(ws, small_g.features(ws, k), k),
                                   small_g.features(ws, k + 1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="pixels"):
        small_g.advance(ws, small_g.features(ws, small_g.pixel_cut), small_g.pixel_cut)
    with pytest.raises(ValueError, match="out of range"):
        small_g.features(ws, len(small_g.layers))


@pytest.mark.parametrize("k", range(8))
def test_gradients_reach_ws_and_features(small_g, k):
    ws = _ws(small_g).detach().requires_grad_(True)
    f = small_g.features(ws, k).detach().requires_grad_(True)
    small_g.synthesize(ws, f, k).square().sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    if k < small_g.pixel_cut:  # at the pixel cut the image no longer depends on ws
        assert ws.grad is not None and ws.grad.abs().sum() > 0


def test_every_w_index_is_used(small_g):
    # Each w index drives some layer: perturbing it alone changes the image (style mixing relies on it).
    ws = _ws(small_g)
    base = small_g(ws)
    for i in range(small_g.num_ws):
        bumped = ws.clone()
        bumped[:, i] += 1.0
        assert not torch.allclose(small_g(bumped), base), f"w index {i} is unused"


def test_mean_ws_shape_and_class_dependence(small_g):
    c = torch.eye(small_g.num_classes)[:4]
    m = small_g.mean_ws(c, n=64, generator=torch.Generator().manual_seed(0))
    assert m.shape == (4, small_g.num_ws, small_g.w_dim)
    assert not torch.allclose(m[0], m[1])


def test_config_validation_and_unknown_prior():
    with pytest.raises(ValueError, match="widths"):
        EmbeddedConfig(widths=(8, 8, 8))
    with pytest.raises(ValueError, match="fashion-mnist"):
        prior_asset("cifar-10")
    with pytest.raises(ValueError, match="even"):
        TrainConfig(batch=7)


def test_discriminator_shapes_and_minibatch_std_sees_collapse():
    D = ProjectionDiscriminator(1, 10, (4, 4, 8, 8), seed=0)
    x = torch.randn(8, 1, 32, 32)
    logits, cls = D(x, torch.eye(10)[:8])
    assert logits.shape == (8,) and cls.shape == (8, 10)
    h = torch.randn(8, 3, 4, 4)
    assert minibatch_std(h)[:, -1].mean() > 0.5
    assert minibatch_std(h[:1].expand(8, -1, -1, -1))[:, -1].abs().max() < 1e-3


def test_mode_seeking_rewards_distinct_pairs_up_to_the_cap():
    z = torch.randn(4, 8)
    same = torch.zeros(4, 1, 4, 4)
    apart = torch.cat([torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)])
    assert mode_seeking(same, z, tau=10.0) == 0
    assert mode_seeking(apart, z, tau=10.0) < 0
    assert mode_seeking(apart * 100, z, tau=0.5) == -0.5


# --- the shipped asset --------------------------------------------------------------------
SHIPPED = ASSET_DIR / EMBEDDED_PRIORS["fashion-mnist"].file


@pytest.mark.skipif(not SHIPPED.is_file(), reason=f"{SHIPPED} is not committed yet")
def test_shipped_asset_loads_with_its_recorded_figures():
    asset = EMBEDDED_PRIORS["fashion-mnist"]
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == asset.sha256
    assert SHIPPED.stat().st_size < 5 * 2**20
    G = load_embedded("fashion-mnist", "cpu")
    assert G.meta["kimg"] == pytest.approx(asset.kimg) and G.meta["dataset"] == asset.dataset
    assert len(G.layers) >= 8 and not any(p.requires_grad for p in G.parameters())
    images = G(_ws(G, n=10))
    assert images.shape == (10, 1, 32, 32) and images.min() >= -1 and images.max() <= 1
    # A trained Fashion-MNIST prior draws dark backgrounds: corners near -1.
    assert images[:, :, :3, :3].mean() < -0.8


def test_missing_asset_names_the_file_and_the_command(tmp_path):
    with pytest.raises(PriorAssetError, match="fashion_mnist_prior.pt is missing.*train-prior"):
        load_embedded("fashion-mnist", "cpu", asset_dir=tmp_path)


def test_corrupt_asset_is_refused(tmp_path):
    (tmp_path / "fashion_mnist_prior.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PriorAssetError, match="corrupt.*train-prior"):
        load_embedded("fashion-mnist", "cpu", asset_dir=tmp_path)


# --- training -----------------------------------------------------------------------------
def _tiny_data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 32, 32), generator=gen, dtype=torch.uint8)
    return images, torch.arange(n) % 10


def _tiny_cfg(kimg: float) -> TrainConfig:
    return TrainConfig(kimg=kimg, batch=8, ckpt_kimg=0.016, d_widths=(4, 4, 4, 4), r1_interval=2,
                       generator=SMALL)


def test_resumed_training_matches_uninterrupted(tmp_path):
    images, labels = _tiny_data()
    names = tuple(str(c) for c in range(10))
    whole = train_prior(_tiny_cfg(0.048), images, labels, names, tmp_path / "a", torch.device("cpu"), progress=False,
                        log=lambda s: None)
    train_prior(_tiny_cfg(0.024), images, labels, names, tmp_path / "b", torch.device("cpu"), progress=False,
                log=lambda s: None)
    resumed = train_prior(_tiny_cfg(0.048), images, labels, names, tmp_path / "b", torch.device("cpu"),
                          progress=False, log=lambda s: None)
    assert (whole.steps, resumed.resumed_from_step, resumed.steps) == (6, 3, 6)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for part in ("G", "D", "G_ema"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs after resuming"
    assert torch.equal(a["rng"], b["rng"])


def test_resume_refuses_changed_settings(tmp_path):
    images, labels = _tiny_data()
    names = tuple(str(c) for c in range(10))
    train_prior(_tiny_cfg(0.016), images, labels, names, tmp_path, torch.device("cpu"), progress=False, log=lambda s: None)
    changed = TrainConfig(kimg=0.032, batch=8, ckpt_kimg=0.016, d_widths=(4, 4, 4, 4), r1_interval=2,
                          generator=SMALL, r1_gamma=1.0)
    with pytest.raises(ValueError, match="r1_gamma"):
        train_prior(changed, images, labels, names, tmp_path, torch.device("cpu"), progress=False, log=lambda s: None)


def test_train_prior_command_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    export = tmp_path / "prior.pt"
    argv = ["train-prior", "--out", str(out), "--kimg", "0.016", "--batch", "16", "--ckpt-kimg", "0.016",
            "--threads", "1", "--no-progress", "--export", str(export)]
    assert cli_main(argv) == 0
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [1]
    assert sorted(p.name for p in out.glob("samples_*.png"))
    assert cli_main(argv[:4] + ["0.032"] + argv[5:] + ["--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [1, 2]
    blob = torch.load(export, weights_only=True)
    assert blob["meta"]["steps"] == 2 and blob["config"] == EmbeddedConfig().to_dict()
    assert cli_main(["train-prior", "--out", str(tmp_path / "none"), "--resume", "--kimg", "0.032"]) == 2


def test_a_lost_run_folder_continues_from_its_state_file(tmp_path):
    """The committed state file lets another machine continue the same run: equal to an uninterrupted one
    up to the rounding of Adam's moments, which the file keeps in bfloat16 to stay small."""
    images, labels = _tiny_data()
    names = tuple(str(c) for c in range(10))
    cpu = torch.device("cpu")
    whole = train_prior(_tiny_cfg(0.048), images, labels, names, tmp_path / "a", cpu, progress=False, log=lambda s: None)
    state = tmp_path / "committed" / "prior_state.pt"
    train_prior(_tiny_cfg(0.024), images, labels, names, tmp_path / "lost", cpu, progress=False, log=lambda s: None,
                state_file=state)
    lines = []
    resumed = train_prior(_tiny_cfg(0.048), images, labels, names, tmp_path / "elsewhere", cpu, progress=False,
                          log=lines.append, state_file=state)
    assert resumed.resumed_from_step == 3 and resumed.steps == whole.steps == 6
    assert any(f"resumed from {state}" in line for line in lines)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "elsewhere")
    for part in ("G", "D", "G_ema"):
        worst = max((v - b[part][k]).abs().max().item() for k, v in a[part].items() if v.is_floating_point())
        assert worst < 1e-3, (part, worst)
    differ = sum(not torch.equal(v, b["G"][k]) for k, v in a["G"].items())
    assert differ > 0  # the moments were rounded, so the continuation is close, not bit-equal
    committed = torch.load(state, weights_only=True)
    assert committed["images_seen"] == b["images_seen"]  # kept up to date
    moments = [s["exp_avg_sq"] for s in committed["opt_g"]["state"].values()]
    assert moments and all(m.dtype == torch.bfloat16 for m in moments)
    assert all(v.dtype == torch.float32 for v in committed["G"].values() if v.is_floating_point())
    assert state.stat().st_size < (tmp_path / "a" / "checkpoint.pt").stat().st_size
    state.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is not a readable prior training state"):
        train_prior(_tiny_cfg(0.064), images, labels, names, tmp_path / "new", cpu, progress=False,
                    log=lambda s: None, state_file=state)


def test_annealing_decays_the_rates_at_the_end_and_may_be_added_when_resuming(tmp_path):
    cfg = replace(_tiny_cfg(0.048), anneal_kimg=0.016)
    assert [cfg.lr_factor(n) for n in (0, 32, 40, 48)] == pytest.approx([1.0, 1.0, 0.5, 0.0], abs=1e-12)
    assert "anneal_kimg" not in _tiny_cfg(0.048).to_dict()  # off: the states written before it still match
    with pytest.raises(ValueError, match="anneal_kimg must be between 0 and kimg"):
        replace(cfg, anneal_kimg=1.0)
    assert cli_main(["train-prior", "--out", str(tmp_path / "bad"), "--kimg", "1", "--anneal-kimg", "5"]) == 2
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    images, labels = _tiny_data()
    names = tuple(str(c) for c in range(10))
    cpu = torch.device("cpu")
    quiet = dict(progress=False, log=lambda s: None)
    train_prior(cfg, images, labels, names, tmp_path / "whole", cpu, **quiet)
    constant = train_prior(_tiny_cfg(0.048), images, labels, names, tmp_path / "constant", cpu, **quiet)
    # A constant-rate run stopped before the window, continued with the anneal: the same run as annealed throughout.
    train_prior(_tiny_cfg(0.032), images, labels, names, tmp_path / "later", cpu, **quiet)
    resumed = train_prior(cfg, images, labels, names, tmp_path / "later", cpu, **quiet)
    assert resumed.resumed_from_step == 4 and resumed.steps == constant.steps == 6
    a, b, c = (load_checkpoint(tmp_path / d) for d in ("whole", "later", "constant"))
    assert all(torch.equal(v, b["G"][k]) for k, v in a["G"].items())
    assert not all(torch.equal(v, c["G"][k]) for k, v in a["G"].items())  # the anneal changed the last steps
    assert b["config"]["anneal_kimg"] == 0.016
    assert [g["lr"] for g in b["opt_g"]["param_groups"]] == pytest.approx([cfg.lr_g * cfg.lr_factor(40)])


def test_the_projected_discriminator_trains_heads_on_the_frozen_proxy_and_resumes(tmp_path):
    """Its heads, not the proxy, are trained and saved; G gets a gradient through the proxy; a run with it
    resumes bit for bit, and a run without it may switch it on when resuming (fresh heads)."""
    from engine.classifiers import load_classifier
    from engine.prior.projected import ProjectedDiscriminator

    proxy = load_classifier("embedded:fashion-mnist", "cpu")
    before = {k: v.clone() for k, v in proxy.state_dict().items()}
    D = ProjectedDiscriminator(proxy, 10, seed=0)
    assert len(D.heads) == 3 and all(k.startswith("heads.") for k in D.state_dict())
    G = EmbeddedGenerator(SMALL)
    c = F.one_hot(torch.arange(4) % 10, 10).float()
    fake = G(G.mapping(torch.randn(4, SMALL.z_dim), c))
    D.requires_grad_(False)
    F.softplus(-D(fake, c)).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())
    assert all(p.grad is None for p in proxy.parameters()) and all(p.grad is None for p in D.parameters())

    images, labels = _tiny_data()
    names = tuple(str(k) for k in range(10))
    cpu, quiet = torch.device("cpu"), dict(progress=False, log=lambda s: None)
    projected = replace(_tiny_cfg(0.048), projected_weight=0.5)
    assert projected.to_dict()["projected_weight"] == 0.5 and "projected_weight" not in _tiny_cfg(0.048).to_dict()
    train_prior(projected, images, labels, names, tmp_path / "whole", cpu, **quiet)
    train_prior(replace(projected, kimg=0.024), images, labels, names, tmp_path / "split", cpu, **quiet)
    resumed = train_prior(projected, images, labels, names, tmp_path / "split", cpu, **quiet)
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "split")
    assert resumed.resumed_from_step == 3 and set(a["D_proj"]) == set(D.state_dict())
    for part in ("G", "D", "D_proj"):
        assert all(torch.equal(v, b[part][k]) for k, v in a[part].items()), part
    assert all(torch.equal(v, load_classifier("embedded:fashion-mnist", "cpu").state_dict()[k]) for k, v in before.items())

    train_prior(_tiny_cfg(0.024), images, labels, names, tmp_path / "later", cpu, **quiet)
    assert "D_proj" not in load_checkpoint(tmp_path / "later")
    switched = train_prior(projected, images, labels, names, tmp_path / "later", cpu, **quiet)
    assert switched.resumed_from_step == 3 and "D_proj" in load_checkpoint(tmp_path / "later")
    assert cli_main(["train-prior", "--out", str(tmp_path / "bad"), "--projected-weight", "-1"]) == 2
