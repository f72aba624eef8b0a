"""Read a StyleGAN-XL training pickle into a GeneratorConfig and the G_ema state dict.

Everything comes from what the file stores for `G_ema`: `layer_names`, each layer's attributes,
`num_ws`, `img_resolution`, `output_scale`. The constructor kwargs recorded for the top-level
objects are ignored on purpose: superres stages overwrite the live attributes but keep the stem's
stale kwargs (a 128 px model's synthesis still says img_resolution=16, num_layers=10).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .config import FullyConnectedSpec, GeneratorConfig, InputSpec, LayerSpec, MappingConfig, SynthesisConfig
from .errors import CheckpointError
from .unpickler import PersistentRecord, Placeholder, SafeUnpickler

_GENERATOR_CLASSES = ("Generator", "SuperresGenerator")


class _Unknown(Exception):
    """The stored objects do not describe a generator this package can build."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint holds for inference: the configuration and G_ema's tensors by state-dict key."""

    config: GeneratorConfig
    state: dict[str, torch.Tensor]
    placeholders: tuple[str, ...]  # globals replaced by inert placeholders (e.g. the discriminator's)
    sha256: str = ""               # of the whole file, hashed as it was read (run.json records it)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (as checkpoints store attributes) to Python numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _state(node: Any, where: str) -> dict:
    if isinstance(node, PersistentRecord):
        return node.state
    if isinstance(node, Placeholder) and isinstance(node.state, dict):
        return node.state  # a plain torch module, e.g. the class embedding
    raise _Unknown(f"{where} is not a stored network module")


def _class_name(node: Any) -> str:
    if isinstance(node, PersistentRecord):
        return node.class_name
    return node.qualified_name if isinstance(node, Placeholder) else type(node).__name__


def _child(node: Any, name: str, where: str, classes: tuple[str, ...]) -> Any:
    child = _state(node, where).get("_modules", {}).get(name)
    if child is None or _class_name(child).rsplit(".", 1)[-1] not in classes:
        raise _Unknown(f"{where}.{name} is {_class_name(child) if child is not None else 'missing'}, expected {' or '.join(classes)}")
    return child


def _attr(node: Any, key: str, where: str, convert: Callable[[Any], Any]) -> Any:
    state = _state(node, where)
    if key not in state:
        raise _Unknown(f"{where} does not store the attribute {key!r}")
    value = _plain(state[key])
    try:
        return convert(value)
    except (TypeError, ValueError) as e:
        raise _Unknown(f"{where}.{key} = {value!r} is not usable ({e})") from None


def _integer(value: Any) -> int:
    if isinstance(value, bool) or float(value) != int(value):
        raise ValueError("expected an integer")
    return int(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, (bool, int)):
        raise ValueError("expected a boolean")
    return bool(value)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (int, float)):
        value = [value, value]
    return tuple(_integer(v) for v in value)


def _fc(node: Any, where: str) -> FullyConnectedSpec:
    get = lambda key, conv: _attr(node, key, where, conv)  # noqa: E731
    return FullyConnectedSpec(get("in_features", _integer), get("out_features", _integer), get("activation", str),
                              get("weight_gain", float), get("bias_gain", float))


def _mapping(g: Any) -> MappingConfig:
    m = _child(g, "mapping", "G_ema", ("MappingNetwork",))
    get = lambda key, conv: _attr(m, key, "mapping", conv)  # noqa: E731
    embed = _child(m, "embed", "mapping", ("Embedding",))
    state = _state(m, "mapping")
    proj = state.get("_modules", {}).get("embed_proj", state.get("embed_proj"))
    layers = tuple(_fc(_child(m, f"fc{i}", "mapping", ("FullyConnectedLayer",)), f"mapping.fc{i}")
                   for i in range(get("num_layers", _integer)))
    w_avg = state.get("_buffers", {}).get("w_avg")
    if not isinstance(w_avg, torch.Tensor):
        raise _Unknown("mapping stores no w_avg tensor")
    return MappingConfig(
        z_dim=get("z_dim", _integer), c_dim=get("c_dim", _integer), w_dim=get("w_dim", _integer),
        num_ws=get("num_ws", _integer), embed_rows=_attr(embed, "num_embeddings", "mapping.embed", _integer),
        embed_dim=_attr(embed, "embedding_dim", "mapping.embed", _integer),
        embed_proj=None if proj is None else _fc(_child(m, "embed_proj", "mapping", ("FullyConnectedLayer",)), "mapping.embed_proj"),
        layers=layers, per_class_w_avg=w_avg.ndim == 2,
    )


_LAYER_FIELDS: dict[str, Callable[[Any], Any]] = {
    "w_dim": _integer, "is_torgb": _flag, "is_critically_sampled": _flag, "use_fp16": _flag,
    "in_channels": _integer, "out_channels": _integer, "in_size": _pair, "out_size": _pair,
    "in_sampling_rate": float, "out_sampling_rate": float, "tmp_sampling_rate": float,
    "in_cutoff": float, "out_cutoff": float, "in_half_width": float, "out_half_width": float,
    "up_factor": _integer, "down_factor": _integer, "up_taps": _integer, "down_taps": _integer,
    "padding": lambda v: tuple(_integer(p) for p in v), "conv_kernel": _integer,
    "conv_clamp": lambda v: None if v is None else float(v),
}


def _layer(synthesis: Any, name: str) -> LayerSpec:
    where = f"synthesis.{name}"
    node = _child(synthesis, name, "synthesis", ("SynthesisLayer",))
    for radial in ("use_radial_filters", "down_radial"):
        if _state(node, where).get(radial, False):
            raise _Unknown(f"{where} uses radial filters (StyleGAN3-R), which this implementation does not support")
    fields = {key: _attr(node, key, where, conv) for key, conv in _LAYER_FIELDS.items()}
    affine = _fc(_child(node, "affine", where, ("FullyConnectedLayer",)), f"{where}.affine")
    return LayerSpec(name=name, affine=affine, **fields)


def _synthesis(g: Any) -> SynthesisConfig:
    s = _child(g, "synthesis", "G_ema", ("SynthesisNetwork",))
    get = lambda key, conv: _attr(s, key, "synthesis", conv)  # noqa: E731
    i = _child(s, "input", "synthesis", ("SynthesisInput",))
    geti = lambda key, conv: _attr(i, key, "synthesis.input", conv)  # noqa: E731
    spec = InputSpec(geti("w_dim", _integer), geti("channels", _integer), geti("size", _pair),
                     geti("sampling_rate", float), geti("bandwidth", float),
                     _fc(_child(i, "affine", "synthesis.input", ("FullyConnectedLayer",)), "synthesis.input.affine"))
    names = get("layer_names", list)
    return SynthesisConfig(
        w_dim=get("w_dim", _integer), num_ws=get("num_ws", _integer), img_resolution=get("img_resolution", _integer),
        img_channels=get("img_channels", _integer), output_scale=get("output_scale", float), input=spec,
        layers=tuple(_layer(s, str(name)) for name in names),
    )


def _generator_config(g: PersistentRecord) -> GeneratorConfig:
    config = GeneratorConfig(_mapping(g), _synthesis(g))
    stored = {key: _attr(g, key, "G_ema", _integer) for key in ("z_dim", "c_dim", "w_dim", "img_resolution")}
    built = {"z_dim": config.mapping.z_dim, "c_dim": config.mapping.c_dim, "w_dim": config.mapping.w_dim,
             "img_resolution": config.synthesis.img_resolution}
    if stored != built:
        raise _Unknown(f"G_ema says {stored} but its networks say {built}")
    return config


def _collect(node: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Parameters and persistent buffers, depth first, in the order `state_dict()` lists them."""
    state = _state(node, prefix.rstrip(".") or "G_ema")
    skip = state.get("_non_persistent_buffers_set") or set()
    tensors = [*state.get("_parameters", {}).items(), *((k, v) for k, v in state.get("_buffers", {}).items() if k not in skip)]
    for name, value in tensors:
        if value is None:
            continue  # a buffer registered as None (ToRGB's filters) is not in the state dict
        if not isinstance(value, torch.Tensor):
            raise _Unknown(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
        out[prefix + name] = value
    for name, child in state.get("_modules", {}).items():
        if child is not None:
            _collect(child, f"{prefix}{name}.", out)


class _HashingReader:
    """A binary file seen through the methods the unpickler reads with (no peek: every byte it takes is
    consumed, so each passes through the digest once and in order)."""

    def __init__(self, file):
        self._file, self.digest = file, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(n)
        self.digest.update(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        data = self._file.readline(limit)
        self.digest.update(data)
        return data

    def readinto(self, buffer) -> int:
        n = self._file.readinto(buffer)
        self.digest.update(memoryview(buffer)[:n])
        return n

    def hexdigest(self) -> str:
        """The whole file's sha256: whatever follows the pickle's end is read through too."""
        while self.read(1 << 20):
            pass
        return self.digest.hexdigest()


def _unpickle(path: Path) -> tuple[Any, tuple[str, ...], str]:
    """(top object, placeholders, the file's sha256) from one read of the file."""
    try:
        with open(path, "rb") as file:
            hashing = _HashingReader(file)
            reader = SafeUnpickler(hashing)
            return reader.load(), tuple(sorted(reader.placeholders)), hashing.hexdigest()
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except MemoryError:  # an empty message otherwise: say which file and why
        raise CheckpointError(f"{path} could not be read: loading it ran out of memory (MemoryError); it is "
                              "corrupt or far larger than this machine can hold") from None
    except RecursionError:
        raise CheckpointError(f"{path} is truncated or corrupt and cannot be read (it nests too deeply)") from None
    except Exception as e:  # noqa: BLE001 - any failure to parse is a corrupt file, reported as one sentence
        raise CheckpointError(f"{path} is truncated or corrupt and cannot be read ({type(e).__name__}: "
                              f"{_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    """Library errors (torch's allocator, numpy) can span many lines: keep the first, cut short."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= 200 else text[:197] + "..."


def _check_path(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"StyleGAN-XL checkpoint not found: {path} (pass the path of a released .pkl file such as imagenet128.pkl)")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file; pass the path of a StyleGAN-XL .pkl file")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path} cannot be read (no permission); make it readable by this server")


def _g_ema(top: Any, path: Path) -> PersistentRecord:
    if not isinstance(top, dict) or "G_ema" not in top:
        keys = sorted(map(str, top)) if isinstance(top, dict) else type(top).__name__
        raise CheckpointError(f"{path} holds no G_ema generator (found {keys}); expected a StyleGAN-XL training pickle")
    g = top["G_ema"]
    if not isinstance(g, PersistentRecord) or g.class_name not in _GENERATOR_CLASSES:
        raise CheckpointError(f"{path} holds a G_ema of kind {_class_name(g)}, not a StyleGAN-XL Generator or SuperresGenerator")
    return g


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """What can be told without reading the file: it exists, is readable and starts as a pickle does
    (protocol 2 or later, as every released StyleGAN-XL file). Raises CheckpointError (one sentence)."""
    path = Path(path)
    _check_path(path)
    try:
        with open(path, "rb") as file:
            head = file.read(2)
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read ({e.strerror or type(e).__name__})") from None
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        raise CheckpointError(f"{path} is not a pickle file; pass a StyleGAN-XL training pickle (.pkl)")


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read `path` without running any of its code; raises CheckpointError with one sentence on failure."""
    path = Path(path)
    _check_path(path)
    top, placeholders, sha256 = _unpickle(path)
    g = _g_ema(top, path)
    try:
        config = _generator_config(g)
        state: dict[str, torch.Tensor] = {}
        _collect(g, "", state)
    except (_Unknown, ValueError) as e:
        raise CheckpointError(f"{path} holds an unknown StyleGAN-XL architecture: {e}") from None
    return Checkpoint(config, state, placeholders, sha256)
