"""The seam's laws for the PixelGenerator, and load_generator's errors. (Each generator family tests the
same laws in its own file: test_embedded_prior.py, test_stylegan_xl*.py.)"""
import pytest
import torch

from engine.generators import PixelGenerator, load_generator


def test_pixel_generator_laws():
    g = PixelGenerator(channels=3, resolution=32, num_classes=10)
    c = torch.eye(10)[:4]
    ws = g.mapping(torch.randn(4, g.z_dim, generator=torch.Generator().manual_seed(0)), c)
    assert ws.shape == (4, g.num_ws, g.w_dim) and len(g.layers) == 1 and g.pixel_cut == 0
    f = g.features(ws, 0).clone().requires_grad_(True)
    assert torch.equal(g.synthesize(ws, f, 0), g(ws))
    g.synthesize(ws, f, 0).square().sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert torch.equal(g.mean_ws(c), torch.zeros(4, 1, g.w_dim))
    with pytest.raises(ValueError, match="single cut"):
        g.advance(ws, f, 0)
    with pytest.raises(ValueError, match="out of range"):
        g.features(ws, 1)


def test_load_generator_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown embedded generator 'embedded:mnist'"):
        load_generator("embedded:mnist")
    with pytest.raises(ValueError, match="does not exist"):
        load_generator(str(tmp_path / "missing.pkl"))
    (tmp_path / "g.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a supported generator checkpoint"):
        load_generator(str(tmp_path / "g.onnx"))
    (tmp_path / "broken.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError):
        load_generator(str(tmp_path / "broken.pkl"))


def test_stylegan_xl_fixture_loads_through_load_generator():
    from pathlib import Path
    from engine.generators import LayeredGenerator
    path = Path(__file__).parent / "fixtures" / "stylegan_xl" / "cifar10_format.pkl"
    G = load_generator(str(path), "cpu")
    assert isinstance(G, LayeredGenerator) and G.num_classes == 10 and G.resolution == 32
    assert G.layers[-1].name.startswith("pixels") and G.num_ws == 17
