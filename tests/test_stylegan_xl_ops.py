"""StyleGAN-XL ops: fast paths against the plain references, adjoints, and the memory-saving backward."""
from __future__ import annotations

import math

import pytest
import torch

from engine.generators.stylegan_xl.ops.filtered_lrelu import filtered_lrelu, filtered_lrelu_ref
from engine.generators.stylegan_xl.ops.filters import kaiser_beta, lowpass_filter
from engine.generators.stylegan_xl.ops.modulated_conv2d import modulated_conv2d, modulated_conv2d_ref
from engine.generators.stylegan_xl.ops.upfirdn2d import upfirdn2d, upfirdn2d_ref, upfirdn2d_transpose

torch.set_num_threads(1)

# (up, down, padding, taps): the StyleGAN-XL cases (36->36, 36->52 with crops, down, ToRGB) and odd ones.
RESAMPLING = [
    (2, 1, (9, 8, 9, 8), 12),
    (4, 1, (-6, -9, -6, -9), 24),
    (1, 2, (0, 0, 0, 0), 12),
    (2, 2, (3, -2, 1, 4), 5),
    (3, 2, (-1, 2, 0, -3), 7),
    (1, 1, (2, -1, 0, 3), 1),
]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("up,down,padding,taps", RESAMPLING)
@pytest.mark.parametrize("flip", [False, True])
def test_upfirdn2d_matches_literal_definition_and_its_adjoint(up, down, padding, taps, flip):
    g = _gen()
    x = torch.randn(2, 3, 17, 15, generator=g, dtype=torch.float64)
    f = None if taps == 1 else torch.rand(taps, generator=g, dtype=torch.float64)
    y = upfirdn2d(x, f, up, down, padding, gain=up**2, flip_filter=flip)
    torch.testing.assert_close(y, upfirdn2d_ref(x, f, up, down, padding, gain=up**2, flip_filter=flip))
    grad = torch.randn(y.shape, generator=g, dtype=torch.float64)
    xt = upfirdn2d_transpose(grad, f, x.shape[2:], up, down, padding, gain=up**2, flip_filter=flip)
    # <A x, g> = <x, A^T g> is what makes it the vector-Jacobian product.
    torch.testing.assert_close((y * grad).sum(), (x * xt).sum())


def test_upfirdn2d_reference_semantics_by_hand():
    x = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    f = torch.tensor([1.0, 10.0])
    # W: zeros after each sample [1,0,2,0,3,0], one zero in front, then a true convolution with f
    # in valid mode: out[j] = 10*p[j] + p[j+1] = [1,10,2,20,3,30]. H: the row and its inserted
    # zero row, filtered the same way, leave 10 * row.
    y = upfirdn2d_ref(x, f, up=2, padding=(1, 0, 0, 0), gain=1.0)
    assert torch.equal(y, 10 * torch.tensor([[[[1.0, 10.0, 2.0, 20.0, 3.0, 30.0]]]]))
    torch.testing.assert_close(upfirdn2d(x, f, up=2, padding=(1, 0, 0, 0)), y)


def test_lowpass_filter_matches_the_kaiser_formula_and_has_unit_dc_gain():
    # L0's up filter of the released models: 12 taps, cutoff 2, width 12, fs 32 (beta 6.444).
    assert kaiser_beta(12, 12.0, 32.0) == pytest.approx(6.444, abs=1e-3)
    f = lowpass_filter(12, 2.0, 12.0, 32.0)
    assert f.dtype == torch.float32 and f.shape == (12,)
    assert float(f.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(f, f.flip(0))
    assert lowpass_filter(1, 2.0, 12.0, 32.0) is None


def test_lowpass_filter_matches_scipy_firwin():
    signal = pytest.importorskip("scipy.signal")
    for taps, cutoff, width, fs in [(12, 2.0, 12.0, 32.0), (24, 6.7272, 4.2988, 64.0), (12, 64.0, 29.59, 256.0)]:
        expected = torch.from_numpy(signal.firwin(taps, cutoff, width=width, fs=fs)).float()
        torch.testing.assert_close(lowpass_filter(taps, cutoff, width, fs), expected, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d_fast_form_equals_grouped_reference(demodulate):
    g = _gen(1)
    x = torch.randn(3, 5, 9, 9, generator=g, dtype=torch.float64)
    w = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64)
    s = torch.randn(3, 5, generator=g, dtype=torch.float64) + 1
    fast = modulated_conv2d(x, w.float(), s.float(), demodulate, 0.7)
    ref = modulated_conv2d_ref(x, w.float(), s.float(), demodulate, 0.7)
    assert fast.shape == (3, 4, 11, 11)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_demodulation_normalises_each_output_channel():
    g = _gen(2)
    # A delta input makes the output the effective kernel itself, so its norm is visible.
    x = torch.zeros(2, 5, 5, 5)
    x[:, :, 2, 2] = 1
    w = torch.randn(3, 5, 1, 1, generator=g)
    s = torch.rand(2, 5, generator=g) + 0.5
    y = modulated_conv2d(x[:, :, 2:3, 2:3], w, s, True, 1.0)
    assert y.shape == (2, 3, 1, 1)
    wm = w[None, :, :, 0, 0] * s[:, None, :]
    expected = wm.sum(dim=2) / wm.square().sum(dim=2).sqrt()
    torch.testing.assert_close(y[:, :, 0, 0], expected, atol=1e-5, rtol=1e-5)


FLRELU_CASES = [
    # up, down, padding, up taps, clamp: hidden 36->36 layer, 36->52 (crop), clamp hit, ToRGB.
    (2, 2, (9, 8, 9, 8), 12, None),
    (4, 2, (-6, -9, -6, -9), 24, None),
    (2, 2, (9, 8, 9, 8), 12, 0.3),
    (1, 1, (0, 0, 0, 0), 1, 0.4),
]


def _flrelu_args(up, down, padding, taps, clamp, dtype=torch.float64, shape=(2, 3, 14, 13), seed=0):
    g = _gen(seed)
    x = torch.randn(shape, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(shape[1], generator=g, dtype=dtype, requires_grad=True)
    fu = None if taps == 1 else lowpass_filter(taps, 3.0, 6.0, 16.0 * up).to(dtype)
    fd = None if up == 1 else lowpass_filter(12, 3.0, 6.0, 32.0).to(dtype)
    torgb = taps == 1
    kw = dict(up=up, down=down, padding=padding, gain=1.0 if torgb else math.sqrt(2), slope=1.0 if torgb else 0.2, clamp=clamp)
    return x, b, fu, fd, kw


@pytest.mark.parametrize("up,down,padding,taps,clamp", FLRELU_CASES)
def test_filtered_lrelu_own_backward_passes_gradcheck(up, down, padding, taps, clamp):
    x, b, fu, fd, kw = _flrelu_args(up, down, padding, taps, clamp)
    assert torch.autograd.gradcheck(lambda x, b: filtered_lrelu(x, b, fu, fd, **kw), (x, b))


@pytest.mark.parametrize("up,down,padding,taps,clamp", FLRELU_CASES)
def test_filtered_lrelu_matches_autograd_through_the_plain_ops(up, down, padding, taps, clamp):
    x, b, fu, fd, kw = _flrelu_args(up, down, padding, taps, clamp)
    out, ref = filtered_lrelu(x, b, fu, fd, **kw), filtered_lrelu_ref(x, b, fu, fd, **kw)
    torch.testing.assert_close(out, ref)
    if clamp is not None and taps > 1:  # the case must actually cut some samples off
        assert not torch.allclose(ref, filtered_lrelu_ref(x, b, fu, fd, **{**kw, "clamp": None}))
    grad = torch.randn(out.shape, generator=_gen(5), dtype=out.dtype)
    mine, theirs = torch.autograd.grad(out, (x, b), grad), torch.autograd.grad(ref, (x, b), grad)
    for a, r in zip(mine, theirs):
        torch.testing.assert_close(a, r)


def test_clamp_bounds_before_the_down_filter():
    x, b, fu, fd, kw = _flrelu_args(2, 2, (9, 8, 9, 8), 12, 0.05, dtype=torch.float32)
    with torch.no_grad():
        huge = filtered_lrelu(x.detach() * 0 + 100, b.detach(), fu, fd, **kw)
        # Every pre-filter value sits at +clamp: the unit-DC-gain down filter keeps it there inside.
        torch.testing.assert_close(huge[:, :, 3:-3, 3:-3], torch.full_like(huge[:, :, 3:-3, 3:-3], 0.05), atol=1e-6, rtol=0)


def test_filtered_lrelu_channel_blocks_agree_with_the_reference():
    # 1x128x64x64 upsamples to ~140^2 per channel: more than one channel block (2^21 elements).
    x, b, fu, fd, kw = _flrelu_args(2, 2, (9, 8, 9, 8), 12, 0.5, dtype=torch.float32, shape=(1, 128, 64, 64))
    out, ref = filtered_lrelu(x, b, fu, fd, **kw), filtered_lrelu_ref(x, b, fu, fd, **kw)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn(out.shape, generator=_gen(3))
    for a, r in zip(torch.autograd.grad(out, (x, b), grad), torch.autograd.grad(ref, (x, b), grad)):
        torch.testing.assert_close(a, r, atol=1e-4, rtol=1e-4)


def _saved_bytes(fn) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_memory_saving_backward_keeps_a_fraction_of_what_autograd_keeps():
    x, b, fu, fd, kw = _flrelu_args(2, 2, (9, 8, 9, 8), 12, 256.0, dtype=torch.float32, shape=(1, 16, 38, 38))
    mine = _saved_bytes(lambda: filtered_lrelu(x, b, fu, fd, **kw))
    plain = _saved_bytes(lambda: filtered_lrelu_ref(x, b, fu, fd, **kw))
    up_elements = 16 * 82 * 84  # (38*2 + 17 - 11)^2 per channel, rows padded to a multiple of 4
    assert mine <= up_elements / 4 + 2 * 12 * 4  # 2 bits per upsampled sample, and the two filters
    assert plain > 16 * mine


def test_no_graph_and_no_codes_without_gradients():
    x, b, fu, fd, kw = _flrelu_args(2, 2, (9, 8, 9, 8), 12, None, dtype=torch.float32)
    with torch.no_grad():
        out = filtered_lrelu(x, b, fu, fd, **kw)
    assert out.grad_fn is None
    assert _saved_bytes(lambda: filtered_lrelu(x.detach(), b.detach(), fu, fd, **kw)) == 0
