"""DSA: siamese sharing, per-op semantics, gradients, determinism and RNG hygiene."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from engine.augment import STRATEGY_TOKENS, DSAParams, Draw, apply, augment, sample, siamese_pair

torch.set_num_threads(1)

SHAPES = [(1, 28), (3, 32), (3, 128)]  # (channels, resolution)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int, channels: int, res: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, res, res, generator=_gen(seed))


def _draw(op: str, res: int, **values: torch.Tensor) -> Draw:
    return Draw(op, res, res, values)


def _theta(a: float, b: float, c: float, d: float, n: int = 1) -> torch.Tensor:
    return torch.tensor([[a, b, 0.0], [c, d, 0.0]]).expand(n, 2, 3).clone()


# --- siamese sharing -----------------------------------------------------------


@pytest.mark.parametrize("channels,res", SHAPES)
@pytest.mark.parametrize("op", STRATEGY_TOKENS)
def test_siamese_draw_is_shared_across_samples_and_batches(op: str, channels: int, res: int) -> None:
    real = _images(4, channels, res)
    params = DSAParams(strategy=op)
    for seed in range(3):  # several draws so flip is seen both ways
        draw = sample(params, 4, res, res, _gen(seed), siamese=True)
        assert draw.op == op and all(v.shape[0] == 1 for v in draw.values.values())
        out = apply(real, draw)
        for i in range(real.shape[0]):
            assert torch.equal(out[i], apply(real[i : i + 1], draw)[0])
        real_aug, syn_aug = siamese_pair(real, real[2:3].clone(), params, _gen(seed))
        assert torch.equal(real_aug[2:3], syn_aug)
        assert torch.equal(real_aug, out)


def test_siamese_pair_with_realistic_batch_sizes() -> None:
    real = _images(256, 3, 32)
    ops = set()
    for seed in range(12):
        real_aug, syn_aug = siamese_pair(real, real[100:110].clone(), DSAParams(), _gen(seed))
        assert torch.equal(real_aug[100:110], syn_aug)
        ops.add(sample(DSAParams(), 256, 32, 32, _gen(seed), siamese=True).op)
    assert ops == set(STRATEGY_TOKENS)


def test_per_sample_draw_has_one_parameter_set_per_sample() -> None:
    for op in STRATEGY_TOKENS:
        draw = sample(DSAParams(strategy=op), 7, 32, 32, _gen(0), siamese=False)
        assert all(v.shape[0] == 7 for v in draw.values.values())
    thetas = sample(DSAParams(strategy="rotate"), 7, 32, 32, _gen(0), siamese=False).values["theta"]
    assert len({float(t[0, 1]) for t in thetas}) == 7


def test_per_sample_paths_match_shared_paths_for_equal_parameters() -> None:
    x = _images(3, 3, 16)
    shared = _draw("crop", 16, dy=torch.tensor([3]), dx=torch.tensor([-2]))
    per_sample = _draw("crop", 16, dy=torch.tensor([3, 3, 3]), dx=torch.tensor([-2, -2, -2]))
    assert torch.equal(apply(x, shared), apply(x, per_sample))
    theta = _theta(0.9, -0.2, 0.2, 1.1)
    affine_shared = apply(x, _draw("scale", 16, theta=theta))
    affine_per_sample = apply(x, _draw("scale", 16, theta=theta.expand(3, 2, 3).clone()))
    torch.testing.assert_close(affine_shared, affine_per_sample)


# --- flip ----------------------------------------------------------------------


def test_flip_mirrors_width_axis() -> None:
    x = _images(3, 3, 8)
    assert torch.equal(apply(x, _draw("flip", 8, flip=torch.ones(1, 1, 1, 1, dtype=torch.bool))), x.flip(3))
    assert torch.equal(apply(x, _draw("flip", 8, flip=torch.zeros(1, 1, 1, 1, dtype=torch.bool))), x)
    mixed = apply(x, _draw("flip", 8, flip=torch.tensor([True, False, True]).view(3, 1, 1, 1)))
    assert torch.equal(mixed[0], x[0].flip(2)) and torch.equal(mixed[1], x[1]) and torch.equal(mixed[2], x[2].flip(2))


def test_flip_probability_is_about_half() -> None:
    flips = sample(DSAParams(strategy="flip"), 2000, 8, 8, _gen(0), siamese=False).values["flip"]
    assert 0.45 < flips.float().mean().item() < 0.55


# --- crop ----------------------------------------------------------------------


def _shifted_reference(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    size = x.shape[-1]
    for h in range(size):
        for w in range(size):
            if 0 <= h + dy < size and 0 <= w + dx < size:
                out[..., h, w] = x[..., h + dy, w + dx]
    return out


@pytest.mark.parametrize("dy,dx", [(2, -3), (-4, 4), (0, 1)])
def test_crop_is_an_integer_shift_with_zero_fill(dy: int, dx: int) -> None:
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10) + 1.0
    expected = _shifted_reference(x, dy, dx)
    assert torch.equal(apply(x, _draw("crop", 10, dy=torch.tensor([dy]), dx=torch.tensor([dx]))), expected)
    per_sample = _draw("crop", 10, dy=torch.tensor([dy, 0]), dx=torch.tensor([dx, 0]))
    out = apply(x, per_sample)
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], x[1])


@pytest.mark.parametrize("res,limit", [(32, 4), (128, 16)])
def test_crop_shifts_cover_minus_s_to_s(res: int, limit: int) -> None:
    values = sample(DSAParams(strategy="crop"), 3000, res, res, _gen(0), siamese=False).values
    for key in ("dy", "dx"):
        assert values[key].dtype == torch.int64
        assert set(values[key].tolist()) == set(range(-limit, limit + 1))


# --- cutout --------------------------------------------------------------------


def test_cutout_zeroes_a_box_clipped_at_the_border() -> None:
    x = torch.ones(1, 3, 8, 8)
    draw = _draw("cutout", 8, top=torch.tensor([-2]), bottom=torch.tensor([2]), left=torch.tensor([5]), right=torch.tensor([9]))
    expected = torch.ones(1, 3, 8, 8)
    expected[:, :, 0:2, 5:8] = 0.0
    assert torch.equal(apply(x, draw), expected)


@pytest.mark.parametrize("res,side", [(32, 16), (30, 15), (128, 64)])
def test_sampled_cutout_has_side_half_the_image(res: int, side: int) -> None:
    draw = sample(DSAParams(strategy="cutout"), 400, res, res, _gen(1), siamese=False)
    v = draw.values
    assert torch.equal(v["bottom"] - v["top"], torch.full((400,), side))
    assert torch.equal(v["right"] - v["left"], torch.full((400,), side))
    centres = v["top"] + side // 2
    assert centres.min() == 0 and centres.max() == res - side % 2
    out = apply(torch.ones(400, 1, res, res), draw)
    rows_zeroed = (v["bottom"].clamp(max=res) - v["top"].clamp(min=0))
    cols_zeroed = (v["right"].clamp(max=res) - v["left"].clamp(min=0))
    assert torch.equal((out == 0).sum(dim=(1, 2, 3)), rows_zeroed * cols_zeroed)


# --- color ---------------------------------------------------------------------


def test_color_formulas_on_a_known_input() -> None:
    x = torch.tensor([0.0, 1.0, 2.0, 4.0, 4.0, 4.0]).view(1, 3, 1, 2)  # pixel 0: (0, 2, 4), pixel 1: (1, 4, 4)
    torch.testing.assert_close(apply(x, _draw_with(x, 0.25, 1.0, 1.0)), x + 0.25)
    saturated = apply(x, _draw_with(x, 0.0, 2.0, 1.0))
    expected = torch.tensor([[-2.0, -1.0], [2.0, 5.0], [6.0, 5.0]]).view(1, 3, 1, 2)  # means 2 and 3
    torch.testing.assert_close(saturated, expected)
    contrasted = apply(x, _draw_with(x, 0.0, 1.0, 0.5))
    mean = x.mean()  # 2.5
    torch.testing.assert_close(contrasted, (x - mean) * 0.5 + mean)


def _draw_with(x: torch.Tensor, shift: float, saturation: float, contrast: float) -> Draw:
    one = torch.ones(1, 1, 1, 1)
    return Draw("color", x.shape[2], x.shape[3], {"shift": one * shift, "saturation": one * saturation, "contrast": one * contrast})


def test_color_applies_brightness_then_saturation_then_contrast() -> None:
    x = _images(2, 3, 4)
    out = apply(x, _draw_with(x, 0.3, 1.7, 0.6))
    step = x + 0.3
    step = (step - step.mean(1, keepdim=True)) * 1.7 + step.mean(1, keepdim=True)
    step = (step - step.mean((1, 2, 3), keepdim=True)) * 0.6 + step.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(out, step)


def test_saturation_has_no_effect_on_one_channel_only() -> None:
    gray, rgb = _images(2, 1, 8), _images(2, 3, 8)
    assert torch.equal(apply(gray, _draw_with(gray, 0.2, 1.7, 0.8)), apply(gray, _draw_with(gray, 0.2, 1.0, 0.8)))
    assert not torch.allclose(apply(rgb, _draw_with(rgb, 0.2, 1.7, 0.8)), apply(rgb, _draw_with(rgb, 0.2, 1.0, 0.8)))


def test_sampled_color_factors_lie_in_their_ranges() -> None:
    v = sample(DSAParams(strategy="color"), 2000, 8, 8, _gen(0), siamese=False).values
    for key, low, high in (("shift", -0.5, 0.5), ("saturation", 0.0, 2.0), ("contrast", 0.5, 1.5)):
        assert v[key].min() >= low and v[key].max() < high
        assert v[key].max() - v[key].min() > 0.9 * (high - low)


# --- scale and rotate ----------------------------------------------------------


@pytest.mark.parametrize("op,params", [("scale", DSAParams(strategy="scale", ratio_scale=1.0)), ("rotate", DSAParams(strategy="rotate", ratio_rotate=0.0))])
def test_identity_affine_returns_the_input(op: str, params: DSAParams) -> None:
    x = _images(3, 3, 16)
    for siamese in (True, False):
        torch.testing.assert_close(apply(x, sample(params, 3, 16, 16, _gen(0), siamese)), x, atol=1e-5, rtol=0)


def test_affine_geometry_quarter_turn_mirror_and_zero_fill() -> None:
    x = _images(2, 3, 9)
    torch.testing.assert_close(apply(x, _draw("rotate", 9, theta=_theta(0.0, -1.0, 1.0, 0.0))), torch.rot90(x, 1, (2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(apply(x, _draw("scale", 9, theta=_theta(-1.0, 0.0, 0.0, -1.0))), x.flip(2, 3), atol=1e-5, rtol=0)
    zoomed_out = apply(x, _draw("scale", 9, theta=_theta(2.0, 0.0, 0.0, 2.0)))
    assert torch.equal(zoomed_out[..., 0, :], torch.zeros(2, 3, 9)) and torch.equal(zoomed_out[..., :, 8], torch.zeros(2, 3, 9))
    torch.testing.assert_close(zoomed_out[..., 4, 4], x[..., 4, 4])


def test_sampled_scale_and_angle_lie_in_their_ranges() -> None:
    theta = sample(DSAParams(strategy="scale"), 2000, 8, 8, _gen(0), siamese=False).values["theta"]
    diag = torch.stack([theta[:, 0, 0], theta[:, 1, 1]])
    assert diag.min() >= 1 / 1.2 and diag.max() <= 1.2 and diag.min() < 0.84 and diag.max() > 1.19
    assert torch.equal(theta[:, 0, 1], torch.zeros(2000)) and torch.equal(theta[:, :, 2], torch.zeros(2000, 2))
    theta = sample(DSAParams(strategy="rotate"), 2000, 8, 8, _gen(0), siamese=False).values["theta"]
    angle = torch.atan2(theta[:, 1, 0], theta[:, 0, 0]) * 180 / math.pi
    assert angle.abs().max() <= 15.0 + 1e-4 and angle.min() < -14.5 and angle.max() > 14.5


# --- gradients, determinism, RNG hygiene, op choice ---------------------------


@pytest.mark.parametrize("siamese", [True, False])
@pytest.mark.parametrize("op", STRATEGY_TOKENS)
def test_gradients_reach_the_input(op: str, siamese: bool) -> None:
    x = _images(4, 3, 16).requires_grad_(True)
    draw = sample(DSAParams(strategy=op), 4, 16, 16, _gen(3), siamese)
    weights = _images(4, 3, 16, seed=1)
    (apply(x, draw) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_same_seed_gives_same_output_and_other_seeds_differ() -> None:
    x, syn = _images(6, 3, 16), _images(2, 3, 16, seed=5)
    params = DSAParams()
    for seed in range(4):
        assert torch.equal(augment(x, params, _gen(seed)), augment(x, params, _gen(seed)))
        first, second = siamese_pair(x, syn, params, _gen(seed)), siamese_pair(x, syn, params, _gen(seed))
        assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    outputs = [augment(x, params, _gen(seed)) for seed in range(6)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


def test_global_rng_state_is_untouched() -> None:
    before = torch.get_rng_state()
    generator = _gen(0)
    x, syn = _images(4, 3, 16), _images(1, 3, 16)
    for _ in range(30):
        augment(x, DSAParams(), generator)
        siamese_pair(x, syn, DSAParams(), generator)
    assert torch.equal(torch.get_rng_state(), before)


def test_op_choice_covers_all_groups_uniformly() -> None:
    generator = _gen(0)
    counts = Counter(sample(DSAParams(), 1, 8, 8, generator, siamese=True).op for _ in range(600))
    assert set(counts) == set(STRATEGY_TOKENS)
    assert min(counts.values()) > 60


def test_op_choice_follows_the_strategy() -> None:
    generator = _gen(0)
    ops = {sample(DSAParams(strategy="crop_flip"), 1, 8, 8, generator, siamese=True).op for _ in range(50)}
    assert ops == {"crop", "flip"}


# --- validation ----------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["color_warp", "", "color__flip", "Color"])
def test_unknown_strategy_token_raises_listing_valid_ones(strategy: str) -> None:
    with pytest.raises(ValueError, match="valid: .*'color'.*'rotate'"):
        DSAParams(strategy=strategy)


@pytest.mark.parametrize("field,value", [("prob_flip", 1.5), ("ratio_scale", 0.9), ("ratio_crop_pad", -0.1), ("ratio_rotate", -1.0)])
def test_out_of_range_strength_raises(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        DSAParams(**{field: value})


def test_shape_mismatches_raise() -> None:
    draw = sample(DSAParams(strategy="crop"), 4, 16, 16, _gen(0), siamese=False)
    with pytest.raises(ValueError, match="16, 16"):
        apply(_images(4, 3, 32), draw)
    with pytest.raises(ValueError, match="batch size 3"):
        apply(_images(3, 3, 16), draw)
    with pytest.raises(ValueError, match="differ"):
        siamese_pair(_images(4, 3, 16), _images(1, 1, 16), DSAParams(), _gen(0))
