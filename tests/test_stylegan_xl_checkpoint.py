"""Reading StyleGAN-XL training pickles: exact state dicts, the traps of real files, and refusals.

The fixtures (tests/fixtures/stylegan_xl/) are code-free files in the released pickle layout:
persistence records with every stored attribute, storages tagged cuda:0, numpy attributes, stale
init kwargs, non-contiguous layer names, and a dill-pickled discriminator from a module that does
not exist. Variants are written in the same layout by `_write_released_layout`.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.generators.base import LayeredGenerator
from engine.generators.stylegan_xl import CheckpointError, StyleGANXLGenerator, load_stylegan_xl, read_checkpoint
from engine.generators.stylegan_xl.ops.filters import lowpass_filter
from engine.generators.stylegan_xl.unpickler import PersistentRecord, Placeholder, SafeUnpickler

torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures" / "stylegan_xl"
CIFAR = FIXTURES / "cifar10_format.pkl"
IMAGENET = FIXTURES / "imagenet128_format.pkl"


def _params(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}_params.json").read_text())


@pytest.fixture(scope="module")
def cifar() -> StyleGANXLGenerator:
    return load_stylegan_xl(CIFAR)


@pytest.fixture(scope="module")
def imagenet() -> StyleGANXLGenerator:
    return load_stylegan_xl(IMAGENET)  # ~226 M parameters, ~0.9 GB: loaded once for the module


def _listing(model: StyleGANXLGenerator) -> list[tuple[str, list[int], str]]:
    return [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("name", ["cifar10", "imagenet128"])
def test_state_dict_is_exactly_the_released_g_ema(name, cifar, imagenet):
    model = {"cifar10": cifar, "imagenet128": imagenet}[name]
    params = _params(name)
    assert _listing(model) == [(e["key"], e["shape"], e["dtype"]) for e in params["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == params["totals"]["n_parameters"]
    assert model.state_dict()["synthesis.input.freqs"].abs().sum() > 0  # loaded, not left uninitialised


@pytest.mark.parametrize("name", ["cifar10", "imagenet128"])
def test_layers_are_built_from_the_stored_attributes(name, cifar, imagenet):
    model = {"cifar10": cifar, "imagenet128": imagenet}[name]
    listed = _params(name)["synthesis_layers"]
    layers = model.config.synthesis.layers
    assert [layer.name for layer in layers] == [entry["name"] for entry in listed]
    for layer, entry in zip(layers, listed):
        for key in ("in_channels", "out_channels", "up_factor", "down_factor", "up_taps", "down_taps", "conv_kernel",
                    "is_torgb", "is_critically_sampled", "use_fp16"):
            assert getattr(layer, key) == entry[key], (layer.name, key)
        assert list(layer.in_size) == entry["in_size"] and list(layer.padding) == entry["padding"]
        assert layer.out_cutoff == pytest.approx(entry["out_cutoff"])


def test_stored_filters_are_the_ones_their_attributes_describe(cifar):
    for i in range(cifar.pixel_cut):
        layer = cifar.synthesis.layer(i)
        spec = layer.spec
        for stored, taps, cutoff, half_width in ((layer.up_filter, spec.up_taps, spec.in_cutoff, spec.in_half_width),
                                                  (layer.down_filter, spec.down_taps, spec.out_cutoff, spec.out_half_width)):
            designed = lowpass_filter(taps, cutoff, 2 * half_width, spec.tmp_sampling_rate)
            assert (stored is None) == (designed is None)
            if stored is not None:
                torch.testing.assert_close(stored, designed, atol=1e-6, rtol=0)


def test_cuts_follow_positions_not_names_and_end_at_pixels(cifar, imagenet):
    assert isinstance(imagenet, LayeredGenerator)
    names = [cut.name for cut in imagenet.layers]
    assert len(names) == 27 and names[0] == "L0_36_1024 (36×36×1024)"
    assert names[8] == "L9_36_1024 (36×36×1024)"  # ImageNet models have no L8: position 8 is L9
    assert names[13] == "L14_52_1024 (52×52×1024)" and names[20] == "L21_148_861 (148×148×1024)"
    assert names[-1] == "pixels (128×128×3)" and imagenet.layers[25].shape == (512, 128, 128)
    assert (imagenet.num_ws, imagenet.w_dim, imagenet.z_dim, imagenet.num_classes, imagenet.resolution) == (27, 512, 64, 1000, 128)
    assert [cut.shape for cut in cifar.layers][14:] == [(1024, 52, 52), (1024, 32, 32), (3, 32, 32)]
    assert (cifar.num_ws, cifar.num_classes, cifar.resolution) == (17, 10, 32)


def _raw_tree(path: Path) -> dict:
    with open(path, "rb") as f:
        return SafeUnpickler(f).load()


def test_the_fixture_traps_are_present_and_handled(cifar):
    raw = CIFAR.read_bytes()
    assert b"cuda:0" in raw  # storages are tagged for a GPU this machine may not have
    tree = _raw_tree(CIFAR)
    synthesis = tree["G_ema"].state["_modules"]["synthesis"].state
    assert synthesis["_init_kwargs"]["img_resolution"] == 16 and synthesis["_init_kwargs"]["num_layers"] == 10
    assert synthesis["img_resolution"] == 32 and cifar.resolution == 32 and len(cifar.config.synthesis.layers) == 16
    layer = synthesis["_modules"]["L0_36_1024"].state
    assert isinstance(layer["in_cutoff"], np.floating) and isinstance(layer["in_size"], np.ndarray)
    assert all(not p.is_cuda for p in cifar.parameters())


def test_loading_imports_nothing_and_runs_no_code_from_the_file():
    torch.load(_saved_tensor(), weights_only=True)  # let torch import its own lazy modules first
    calls: list[tuple[str, str]] = []
    c_calls: set[str] = set()

    def profile(frame, event, arg):
        if event == "call":
            calls.append((frame.f_code.co_filename, frame.f_code.co_name))
        elif event == "c_call":
            c_calls.add(f"{getattr(arg, '__module__', None)}.{getattr(arg, '__qualname__', arg)}")

    before = set(sys.modules)
    sys.setprofile(profile)
    try:
        checkpoint = read_checkpoint(CIFAR)
    finally:
        sys.setprofile(None)
    assert set(sys.modules) == before
    assert "fixture_only.discriminator.ProjectedDiscriminator" in checkpoint.placeholders
    assert "dill._dill._create_function" in checkpoint.placeholders
    trusted = (str(Path(torch.__file__).parent), str(Path(np.__file__).parent), str(Path(os.__file__).parent),
               str(Path(__file__).parents[1] / "engine"), "<frozen ")
    # Dataclass __init__s are generated from strings by the standard library; nothing else may run from one.
    foreign = [(f, n) for f, n in calls if not f.startswith(trusted) and not (f == "<string>" and n == "__init__")]
    assert foreign == []
    assert not c_calls & {"builtins.exec", "builtins.eval", "builtins.compile", "builtins.__import__", "posix.system"}


def _saved_tensor() -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(torch.zeros(1), buffer)
    buffer.seek(0)
    return buffer


def _touch(path: str) -> None:
    Path(path).touch()


class _Payload:
    """Pickles as a call of `func(*args)`: what a malicious checkpoint would hold."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("func,args,shown", [
    (os.system, ("touch {marker}",), "os.system"),
    (subprocess.check_call, (["touch", "{marker}"],), "subprocess.check_call"),
    (eval, ("open({marker!r}, 'w')",), "builtins.eval"),
    (exec, ("open({marker!r}, 'w')",), "builtins.exec"),
])
@pytest.mark.parametrize("where", ["G_ema", "D"])
def test_a_payload_is_refused_and_never_runs(tmp_path, func, args, shown, where):
    marker = tmp_path / "ran"
    args = tuple(a.format(marker=str(marker)) if isinstance(a, str) else [s.format(marker=str(marker)) for s in a] for a in args)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G": None, where: _Payload(func, *args), "G_ema" if where == "D" else "D": None}))
    with pytest.raises(CheckpointError, match=f"this file calls {shown.replace('.', '[.]')}; refusing to load it"):
        load_stylegan_xl(path)
    assert not marker.exists()


def test_importable_callables_named_by_the_file_are_not_called(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "canary.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Payload(_touch, str(marker))}))
    with pytest.raises(CheckpointError, match="not a StyleGAN-XL Generator"):
        load_stylegan_xl(path)
    assert not marker.exists()


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*imagenet256\.pkl"):
        load_stylegan_xl(tmp_path / "imagenet256.pkl")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_stylegan_xl(tmp_path)


@pytest.mark.parametrize("keep", [0, 1, 1000, 0.5, 0.99, -1])
def test_truncated_files_are_refused_cleanly(tmp_path, keep):
    raw = CIFAR.read_bytes()
    cut = keep if isinstance(keep, int) and keep >= 0 else len(raw) - 1 if keep == -1 else int(len(raw) * keep)
    path = tmp_path / "cut.pkl"
    path.write_bytes(raw[:cut])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_stylegan_xl(path)


@pytest.mark.parametrize("content", [b"not a pickle at all\n", bytes(range(256)) * 4, "zip"])
def test_corrupt_files_are_refused_cleanly(tmp_path, content):
    path = tmp_path / "bad.pkl"
    if content == "zip":
        torch.save({"G_ema": torch.zeros(2)}, path)  # a torch zip archive, not a training pickle
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_stylegan_xl(path)


@pytest.mark.parametrize("top,match", [
    ({"G": None, "D": None}, r"holds no G_ema generator \(found \['D', 'G'\]\)"),
    ([1, 2, 3], "holds no G_ema generator"),
    ({"G_ema": {"weights": 1}}, "G_ema of kind dict"),
])
def test_pickles_of_the_wrong_kind_are_refused(tmp_path, top, match):
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps(top))
    with pytest.raises(CheckpointError, match=match):
        load_stylegan_xl(path)


@contextlib.contextmanager
def _persistence_module():
    """A stand-in `torch_utils.persistence` so pickle can name its reconstruct function while writing."""
    package, module = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - a safe reader never calls it
        raise AssertionError("called")

    _reconstruct_persistent_obj.__module__ = module.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package.persistence = module
    sys.modules.update({package.__name__: package, module.__name__: module})
    try:
        yield _reconstruct_persistent_obj
    finally:
        del sys.modules[package.__name__], sys.modules[module.__name__]


class _ReleasedLayoutPickler(pickle.Pickler):
    def __init__(self, file, reconstruct):
        super().__init__(file, protocol=4)
        self.reconstruct = reconstruct

    def reducer_override(self, obj):
        if isinstance(obj, PersistentRecord):
            meta = {"type": "class", "version": obj.version, "module_src": "# not the real source",
                    "class_name": obj.class_name, "state": obj.state}
            return self.reconstruct, (meta,)
        if isinstance(obj, Placeholder):  # mapping.embed, a plain torch.nn.Embedding in real files
            # Real files use NEWOBJ; a REDUCE of the same class reads back identically.
            return torch.nn.Embedding, (), obj.state
        return NotImplemented


def _write_released_layout(tree: dict, path: Path) -> Path:
    with _persistence_module() as reconstruct, open(path, "wb") as f:
        _ReleasedLayoutPickler(f, reconstruct).dump(tree)
    return path


def _modules(record: PersistentRecord) -> dict:
    return record.state["_modules"]


def _make_unconditional(g: PersistentRecord) -> None:
    mapping = _modules(g)["mapping"]
    g.state["c_dim"] = mapping.state["c_dim"] = 0
    _modules(mapping)["embed_proj"] = None
    fc0 = _modules(mapping)["fc0"]
    fc0.state["in_features"] = 64
    fc0.state["_parameters"]["weight"] = torch.zeros(512, 64)
    mapping.state["_buffers"]["w_avg"] = torch.zeros(512)


def test_unconditional_models_are_refused_unless_allowed(tmp_path):
    tree = _raw_tree(CIFAR)
    _make_unconditional(tree["G_ema"])
    path = _write_released_layout({"G": None, "D": None, "G_ema": tree["G_ema"]}, tmp_path / "uncond.pkl")
    with pytest.raises(CheckpointError, match=r"unconditional generator \(c_dim 0\), but a class-conditional one is required"):
        load_stylegan_xl(path)
    model = load_stylegan_xl(path, require_conditional=False)
    assert model.num_classes == 0 and model.state_dict()["mapping.fc0.weight"].shape == (512, 64)


def _layer(g: PersistentRecord, name: str = "L3_36_1024") -> dict:
    return _modules(_modules(g)["synthesis"])[name].state


@pytest.mark.parametrize("edit,match", [
    (lambda g: _layer(g).update(use_radial_filters=np.bool_(True)), "radial filters"),
    (lambda g: _layer(g).update(padding=[9, 8, 9, 12]), r"padding \(9, 8, 9, 12\) gives output \(36, 38\)"),
    (lambda g: _modules(g)["synthesis"].state.pop("layer_names"), "does not store the attribute 'layer_names'"),
    (lambda g: _layer(g)["_parameters"].update(weight=torch.zeros(1024, 1024, 1, 1)), "its layer attributes need"),
    (lambda g: _layer(g)["_parameters"].pop("bias"), "G_ema lacks synthesis.L3_36_1024.bias"),
    (lambda g: _modules(g)["synthesis"].state.update(num_ws=18), "num_ws=18 but there are 16 layers"),
])
def test_unknown_architectures_get_one_sentence(tmp_path, edit, match):
    tree = _raw_tree(CIFAR)
    edit(tree["G_ema"])
    path = _write_released_layout({"G_ema": tree["G_ema"]}, tmp_path / "odd.pkl")
    with pytest.raises(CheckpointError, match="unknown StyleGAN-XL architecture") as info:
        load_stylegan_xl(path)
    assert info.match(match)


def test_unused_extra_buffers_are_ignored_with_a_warning(tmp_path, cifar):
    tree = _raw_tree(CIFAR)
    _layer(tree["G_ema"])["_buffers"]["up_filter4"] = torch.ones(48)
    path = _write_released_layout({"G_ema": tree["G_ema"]}, tmp_path / "extra.pkl")
    with pytest.warns(UserWarning, match="up_filter4"):
        model = load_stylegan_xl(path)
    assert _listing(model) == _listing(cifar)


def test_rewritten_fixture_round_trips(tmp_path, cifar):
    # The writer used by the variant tests produces a file the reader sees as the original.
    path = _write_released_layout({"G_ema": _raw_tree(CIFAR)["G_ema"]}, tmp_path / "same.pkl")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_stylegan_xl(path)
    for (k, a), (_, b) in zip(model.state_dict().items(), cifar.state_dict().items()):
        assert torch.equal(a, b), k


def test_fixture_generator_runs_the_layer_laws_on_its_cheap_end(cifar):
    # Full-size StyleGAN-XL layers cost seconds each on a CPU: check the laws on the last two cuts.
    g = torch.Generator().manual_seed(0)
    ws = cifar.mapping(torch.randn(1, 64, generator=g), torch.eye(10)[[3]])
    f = torch.randn(1, *cifar.layers[15].shape, generator=g)
    image = cifar.synthesize(ws, f, 15)
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()
    torch.testing.assert_close(cifar.advance(ws, f, 15), image)
    assert torch.equal(cifar.synthesize(ws, image, 16), image)
