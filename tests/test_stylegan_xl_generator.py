"""StyleGAN-XL generator on small random configurations: layer laws, cuts, mapping, chunking, options."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.generators.base import LayeredGenerator
from engine.generators.stylegan_xl import (
    ExecutionOptions,
    StemDesign,
    StyleGANXLGenerator,
    advance_chunked,
    backward_chunked,
    features_chunked,
    random_stylegan_xl,
    stem_config,
    synthesize_chunked,
)
from engine.generators.stylegan_xl.ops.modulated_conv2d import modulated_conv2d_ref

torch.set_num_threads(1)

# A 32 px stem with the released margins: 36 -> 52 (up 4 / down 2, cropping) -> 52 -> 32 (crop) -> ToRGB.
SMALL = StemDesign(img_resolution=32, num_layers=4, channel_base=64, channel_max=8, c_dim=3, z_dim=8, w_dim=16,
                   embed_rows=5, embed_dim=6)


def _model(design: StemDesign = SMALL, options: ExecutionOptions = ExecutionOptions(), seed: int = 0) -> StyleGANXLGenerator:
    return _turn_input(random_stylegan_xl(stem_config(design), torch.Generator().manual_seed(seed), options), seed)


def _turn_input(G: StyleGANXLGenerator, seed: int) -> StyleGANXLGenerator:
    # Trained models rotate and shift the Fourier input by ws[:, 0]; a fresh one starts with zero
    # affine weights, which would leave that row (and the transform code) untested.
    with torch.no_grad():
        G.synthesis.input.affine.weight.normal_(generator=torch.Generator().manual_seed(seed + 100))
    return G


@pytest.fixture(scope="module")
def small_g() -> StyleGANXLGenerator:
    return _model()


def _ws(G: StyleGANXLGenerator, n: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.eye(G.num_classes)[torch.arange(n) % G.num_classes]
    ws = G.mapping(torch.randn(n, G.z_dim, generator=g), c)
    # Distinct rows, so that using the wrong w row anywhere changes the output.
    return ws + 0.5 * torch.randn(ws.shape, generator=g)


def test_is_a_layered_generator_with_named_cuts_ending_at_pixels(small_g):
    assert isinstance(small_g, LayeredGenerator) and isinstance(small_g, torch.nn.Module)
    names = [cut.name for cut in small_g.layers]
    assert names == ["L0_36_8 (36×36×8)", "L1_52_6 (36×36×8)", "L2_52_2 (52×52×6)", "L3_32_2 (52×52×2)",
                     "L4_32_3 (32×32×2)", "pixels (32×32×3)"]
    assert [cut.index for cut in small_g.layers] == list(range(6))
    assert small_g.layers[-1].shape == (3, 32, 32) and small_g.pixel_cut == 5
    assert (small_g.num_ws, small_g.w_dim, small_g.z_dim, small_g.num_classes) == (6, 16, 8, 3)
    assert (small_g.resolution, small_g.channels) == (32, 3)


def test_synthesize_from_every_cut_equals_forward(small_g):
    ws = _ws(small_g)
    image = small_g(ws)
    assert image.shape == (3, 3, 32, 32) and image.dtype == torch.float32
    assert image.std() > 0
    for k, cut in enumerate(small_g.layers):
        f = small_g.features(ws, k)
        assert f.shape == (3, *cut.shape)
        torch.testing.assert_close(small_g.synthesize(ws, f, k), image, rtol=0, atol=0)
    assert torch.equal(small_g.synthesize(ws, image, small_g.pixel_cut), image)


def test_advance_equals_next_features(small_g):
    ws = _ws(small_g)
    for k in range(small_g.pixel_cut):
        torch.testing.assert_close(small_g.advance(ws, small_g.features(ws, k), k), small_g.features(ws, k + 1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="pixels"):
        small_g.advance(ws, small_g.features(ws, small_g.pixel_cut), small_g.pixel_cut)


def test_output_scale_applies_once_at_the_pixel_cut(small_g):
    ws = _ws(small_g)
    last = small_g.pixel_cut - 1
    torgb_out = small_g.synthesis.run(small_g.features(ws, last), ws, last, last + 1)
    torch.testing.assert_close(small_g.features(ws, small_g.pixel_cut), torgb_out * 0.25)


@pytest.mark.parametrize("k", [0, 2, 4])
def test_gradients_reach_f_and_exactly_the_ws_rows_after_the_cut(small_g, k):
    ws = _ws(small_g).requires_grad_()
    f = small_g.features(ws, k).detach().requires_grad_()
    small_g.synthesize(ws, f, k).square().sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    row_norms = ws.grad.abs().sum(dim=(0, 2))
    assert (row_norms[: k + 1] == 0).all() and (row_norms[k + 1 :] > 0).all()


def test_every_ws_row_changes_the_image(small_g):
    ws = _ws(small_g)
    image = small_g(ws)
    for row in range(small_g.num_ws):
        nudged = ws.clone()
        nudged[:, row] += 1.0
        assert not torch.allclose(small_g(nudged), image), f"ws row {row} is unused"


def test_shape_errors_are_readable(small_g):
    ws = _ws(small_g)
    with pytest.raises(ValueError, match=r"ws must be \[N, 6, 16\]"):
        small_g.features(ws[:, :5], 1)
    with pytest.raises(ValueError, match="cut 2"):
        small_g.synthesize(ws, small_g.features(ws, 1), 2)
    with pytest.raises(ValueError, match="out of range"):
        small_g.features(ws, 6)


def test_mapping_uses_the_class_argmax_and_truncates_towards_the_class_average(small_g):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(4, 8, generator=g)
    onehot = torch.eye(3)[[0, 1, 2, 0]]
    ws = small_g.mapping(z, onehot)
    assert ws.shape == (4, 6, 16) and torch.equal(ws[:, 0], ws[:, -1])
    torch.testing.assert_close(small_g.mapping(z, onehot * 0.3 + torch.eye(3)[[0, 1, 2, 0]] * 0.5), ws)
    assert not torch.allclose(small_g.mapping(z, torch.eye(3)[[1, 1, 1, 1]]), ws)
    w_avg = torch.randn(3, 16, generator=g)
    model = _model()
    model.mapping_network.w_avg.copy_(w_avg)
    torch.testing.assert_close(model.mapping(z, onehot, truncation_psi=0.0)[:, 3], w_avg[[0, 1, 2, 0]])
    half = model.mapping(z, onehot, truncation_psi=0.5)
    torch.testing.assert_close(half, 0.5 * (model.mapping(z, onehot) + w_avg[[0, 1, 2, 0]].unsqueeze(1).expand(-1, 6, -1)))


def test_mean_ws_is_per_class_and_deterministic(small_g):
    onehot = torch.eye(3)
    a = small_g.mean_ws(onehot, n=64, generator=torch.Generator().manual_seed(0))
    b = small_g.mean_ws(onehot, n=64, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 6, 16) and torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])


def test_unconditional_mapping_ignores_the_class():
    G = _model(dataclasses.replace(SMALL, c_dim=0))
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    assert G.num_classes == 0 and G.mapping_network.embed_proj is None
    torch.testing.assert_close(G.mapping(z, torch.zeros(2, 0)), G.mapping(z, torch.ones(2, 0)))
    assert "mapping.embed.weight" in G.state_dict() and G.state_dict()["mapping.w_avg"].shape == (16,)


def test_layers_are_addressed_by_position_not_by_the_number_in_their_name():
    config = stem_config(SMALL)
    renamed = tuple(dataclasses.replace(layer, name=name) for layer, name in
                    zip(config.synthesis.layers, ["L0_36_8", "L2_52_6", "L9_52_2", "L3_32_2", "L4_32_3"]))
    config = dataclasses.replace(config, synthesis=dataclasses.replace(config.synthesis, layers=renamed))
    G = _turn_input(random_stylegan_xl(config, torch.Generator().manual_seed(0)), 0)
    reference = _model()
    ws = _ws(reference)
    torch.testing.assert_close(G(ws), reference(ws), rtol=0, atol=0)
    assert G.layers[2].name == "L9_52_2 (52×52×6)"


def test_memory_saving_and_reference_paths_agree_on_values_and_gradients():
    saving, plain = _model(), _model(options=ExecutionOptions(memory_saving=False))
    ws = _ws(saving)
    k = 1
    grads = []
    for G in (saving, plain):
        w = ws.clone().requires_grad_()
        f = G.features(ws, k).requires_grad_()
        image = G.synthesize(w, f, k)
        image.square().sum().backward()
        grads.append((image.detach(), w.grad, f.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()))


def test_modulated_conv_in_a_layer_matches_the_grouped_reference(small_g):
    layer = small_g.synthesis.layer(1)
    ws = _ws(small_g)
    x = small_g.features(ws, 1)
    styles = layer.affine(ws[:, 2])
    from engine.generators.stylegan_xl.ops.modulated_conv2d import modulated_conv2d

    fast = modulated_conv2d(x, layer.weight, styles, True, layer.magnitude_ema.rsqrt())
    torch.testing.assert_close(fast, modulated_conv2d_ref(x, layer.weight, styles, True, layer.magnitude_ema.rsqrt()),
                               rtol=1e-4, atol=1e-5)


def test_conv_clamp_bounds_activations_under_a_huge_bias():
    G = _model()
    ws = _ws(G)
    layer = G.synthesis.layer(0)
    with torch.no_grad():
        layer.bias.fill_(1e6)
        out = G.advance(ws, G.features(ws, 0), 0)
    # Clamped at 256 before the unit-gain down filter; its overshoot stays within the filter's L1 norm.
    bound = 256 * float(layer.down_filter.abs().sum()) ** 2
    assert out.abs().max() <= bound and out.abs().max() > 200


def test_chunked_helpers_equal_the_whole_batch(small_g):
    ws = _ws(small_g, n=5)
    k = 2
    f = small_g.features(ws, k)

    def close(a: torch.Tensor, b: torch.Tensor) -> None:
        # Demodulation normalises styles by one RMS over the batch: chunks differ by float rounding.
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))

    close(features_chunked(small_g, ws, k, 2), f)
    close(advance_chunked(small_g, ws, f, k, 2), small_g.advance(ws, f, k))
    images = synthesize_chunked(small_g, ws, f, k, 2)
    assert images.grad_fn is None
    close(images, small_g.synthesize(ws, f, k))


def test_backward_chunked_accumulates_the_full_batch_gradient(small_g):
    ws0 = _ws(small_g, n=5)
    k = 2
    f0 = small_g.features(ws0, k)
    target = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(7))

    ws, f = ws0.clone().requires_grad_(), f0.clone().requires_grad_()
    ((small_g.synthesize(ws, f, k) - target).square().sum()).backward()
    expected = (ws.grad.clone(), f.grad.clone())

    ws, f = ws0.clone().requires_grad_(), f0.clone().requires_grad_()
    images = synthesize_chunked(small_g, ws, f, k, 2)  # pass 1: no graph
    backward_chunked(small_g, ws, f, k, 2 * (images - target), 2)  # pass 2: dL/dimages into ws, f
    for got, want in zip((ws.grad, f.grad), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))

    f_only = f0.clone().requires_grad_()
    backward_chunked(small_g, ws0, f_only, k, 2 * (images - target), 3)
    assert ws0.grad is None and f_only.grad is not None


def test_backward_chunked_refuses_mismatched_batches(small_g):
    ws = _ws(small_g, n=4).requires_grad_()
    f = small_g.features(ws, 1).detach()
    with pytest.raises(ValueError, match="same batch size"):
        backward_chunked(small_g, ws, f, 1, torch.zeros(3, 3, 32, 32), 2)
    with pytest.raises(ValueError, match="chunk_size"):
        synthesize_chunked(small_g, ws, f, 1, 0)


def test_random_generators_are_seeded_frozen_and_eval():
    a, b, c = _model(seed=0), _model(seed=0), _model(seed=1)
    ws = _ws(a)
    assert torch.equal(a(ws), b(ws)) and not torch.allclose(a(ws), c(ws))
    assert not any(p.requires_grad for p in a.parameters()) and not a.training


def test_stem_design_reproduces_the_released_16px_stem_table():
    layers = stem_config(StemDesign()).synthesis.layers
    assert [layer.name for layer in layers] == [f"L{i}_36_1024" for i in range(9)] + ["L9_16_1024", "L10_16_3"]
    assert layers[0].padding == (9, 8, 9, 8) and layers[9].padding == (-11, -12, -11, -12)
    assert layers[7].out_cutoff == pytest.approx(6.7272, abs=1e-4) and layers[7].out_half_width == pytest.approx(2.1494, abs=1e-4)
    assert [layer.is_critically_sampled for layer in layers][-3:] == [True, True, True]
    assert sum(p.numel() for p in StyleGANXLGenerator(stem_config(StemDesign())).parameters()) == pytest.approx(101.88e6, rel=1e-3)


def test_invalid_configurations_are_refused():
    config = stem_config(SMALL)
    layer = config.synthesis.layers[1]
    with pytest.raises(ValueError, match="padding"):
        dataclasses.replace(layer, padding=(10, 7, 10, 8))
    with pytest.raises(ValueError, match="unknown activation 'gelu'; valid names: linear, lrelu"):
        dataclasses.replace(layer.affine, activation="gelu")
    with pytest.raises(ValueError, match="num_ws"):
        dataclasses.replace(config.synthesis, num_ws=7)
    with pytest.raises(ValueError, match="receives"):
        dataclasses.replace(config.synthesis, layers=config.synthesis.layers[2:], num_ws=4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_follows_the_checkpoint_flags_and_stays_close_to_float32():
    fp32 = _model().to("cuda")
    fp16 = _model(options=ExecutionOptions(fp16_on_cuda=True)).to("cuda")
    ws = _ws(_model()).to("cuda")
    assert fp16.features(ws, 2).dtype == torch.float16 and fp32.features(ws, 2).dtype == torch.float32
    a, b = fp32(ws), fp16(ws)
    assert b.dtype == torch.float32
    assert (a - b).abs().max() <= 2e-2 * a.abs().max()
    torch.testing.assert_close(fp32(ws).cpu(), _model()(ws.cpu()), rtol=1e-3, atol=1e-4)
