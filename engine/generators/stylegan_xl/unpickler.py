"""Read a StyleGAN-XL training pickle as data, without importing or running anything it names.

A pickle names globals (module + name) and calls them to rebuild objects. This reader resolves a
short allow-list of pure data constructors (tensors, storages, numpy arrays, containers) to the
real ones or to checked replacements, and turns every other name into an inert placeholder class:
constructing, calling or filling a placeholder only records its arguments. So the authors'
networks (pickled as `torch_utils.persistence` records carrying their source code, which the
official loader executes) come back as `PersistentRecord`s of their stored state, and the
discriminator's classes, closures and code objects come back as placeholders nobody runs.

Names no honest checkpoint holds (os.system, eval, subprocess, ...) are refused outright, so a
malicious file is reported as such instead of loading as a harmless-looking placeholder; Python 2
spellings (`__builtin__.eval`) are mapped to their Python 3 names before that check.

Nothing the file claims is allocated before it is checked against the bytes the file holds: a storage
blob's claimed size against the blob, a tensor's size, stride and offset against its storage, and
numpy arrays only from their pickled data (no allocating constructor, `bytearray`, or bare
`numpy.ndarray(shape)`, is on the allow-list).
"""
from __future__ import annotations

import _compat_pickle
import collections
import hashlib
import io
import pickle
from dataclasses import dataclass
from types import MappingProxyType
from typing import IO, Any

import numpy as np
import torch

from .errors import CheckpointError

# Module roots that only a payload would name: process, file-system, network, import machinery.
_FORBIDDEN_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy", "ctypes", "pty",
    "code", "codeop", "marshal", "pickle", "_pickle", "webbrowser", "multiprocessing", "signal", "pathlib",
    "io", "_io", "tempfile", "urllib", "http", "ftplib", "smtplib", "asyncio", "threading", "_thread",
    "pdb", "bdb", "cProfile", "profile", "timeit", "trace", "zipimport", "pkgutil", "site", "glob", "fcntl",
    "resource", "platform", "gc", "inspect",
})
_FORBIDDEN_BUILTINS = frozenset({
    "eval", "exec", "compile", "__import__", "open", "input", "breakpoint", "exit", "quit", "globals",
    "locals", "vars", "delattr", "help", "__loader__", "__builtins__",
})
_FORBIDDEN_NAMES = frozenset({"torch.load", "torch.save", "numpy.load", "numpy.save", "numpy.fromfile"})
# posix.system is how os.system pickles on Linux; name it the way users write it.
_DISPLAY_MODULE = {"posix": "os", "nt": "os"}


@dataclass(frozen=True)
class PersistentRecord:
    """A `torch_utils.persistence` object: its class name and stored `__dict__`, never its code."""

    class_name: str
    version: int
    state: dict
    source_sha256: str


class Placeholder:
    """Stands in for any global outside the allow-list. It never calls anything.

    Subclasses are made per name (`qualified_name`); instances keep what the pickle gave them.
    """

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Placeholder":
        # Pickle's NEWOBJ calls __new__ without __init__, so the fields are set here.
        self = object.__new__(cls)
        self.args, self.state, self.items = args, None, []
        return self

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> "Placeholder":
        return Placeholder(*args)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def add(self, value: Any) -> None:
        self.items.append(value)

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualified_name}>"


class EasyDict(dict):
    """Stands in for dnnlib.util.EasyDict: a dict with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or not isinstance(meta.get("class_name"), str) or not isinstance(meta.get("state"), dict):
        raise pickle.UnpicklingError("a persistent-object record lacks its class name or state")
    source = meta.get("module_src", "")
    digest = hashlib.sha256(source.encode() if isinstance(source, str) else b"").hexdigest()
    return PersistentRecord(meta["class_name"], int(meta.get("version", 0)), meta["state"], digest)


# Element sizes of the storage classes a legacy blob may name (UntypedStorage counts bytes).
_STORAGE_ITEMSIZE = {
    "UntypedStorage": 1, "ByteStorage": 1, "CharStorage": 1, "BoolStorage": 1, "ShortStorage": 2,
    "HalfStorage": 2, "BFloat16Storage": 2, "IntStorage": 4, "FloatStorage": 4, "LongStorage": 8,
    "DoubleStorage": 8, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16,
}


class _BlobHeader(pickle.Unpickler):
    """Reads the pickles at the head of a legacy storage blob without building anything: globals may
    only be storage classes (returned as their names), persistent ids are recorded."""

    def __init__(self, file: IO[bytes]):
        super().__init__(file)
        self.pids: list[Any] = []

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch", "torch.storage") and name in _STORAGE_ITEMSIZE:
            return name
        raise pickle.UnpicklingError(f"a storage blob names {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        self.pids.append(pid)
        return None


def _claimed_storage_bytes(blob: bytes) -> int:
    """Bytes the blob's storages claim (torch's legacy reader allocates them before reading any data)."""
    head = io.BytesIO(blob)
    for _ in range(3):            # magic number, protocol version, system info: plain values
        _BlobHeader(head).load()
    reader = _BlobHeader(head)
    reader.load()
    total, seen = 0, set()
    for pid in reader.pids:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("a storage blob holds a persistent id that is not a storage")
        kind, key, numel = pid[1], pid[2], pid[4]
        if kind not in _STORAGE_ITEMSIZE or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError("a storage blob describes its storage wrongly")
        if key not in seen:
            seen.add(key)
            total += numel * _STORAGE_ITEMSIZE[kind]
    return total


def _load_storage(blob: Any) -> Any:
    """A nested legacy `torch.save` of one storage, possibly tagged cuda:0, read on the CPU as weights only."""
    if not isinstance(blob, bytes):
        raise pickle.UnpicklingError("a storage blob is not bytes")
    claimed = _claimed_storage_bytes(blob)
    if claimed > len(blob):
        raise pickle.UnpicklingError(f"a storage claims {claimed} bytes but its blob holds only {len(blob)}")
    storage = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"a storage blob holds a {type(storage).__name__}, not a storage")
    return storage


def _whole_numbers(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list, torch.Size)) or not all(type(v) is int and v >= 0 for v in values):
        raise pickle.UnpicklingError(f"a tensor's {what} is not a sequence of non-negative whole numbers")
    return tuple(values)


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    # Hooks and metadata are dropped: a tensor from a file must not carry callables.
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("a tensor refers to something that is not a storage")
    size, stride = _whole_numbers(size, "size"), _whole_numbers(stride, "stride")
    if type(offset) is not int or offset < 0 or len(size) != len(stride):
        raise pickle.UnpicklingError("a tensor's offset or stride does not describe its size")
    # Rebuilding a view larger than its storage would silently enlarge the storage to whatever the file
    # claims (a 16-byte storage told 10^12 elements allocates terabytes): refuse it instead.
    held = storage._size() if isinstance(storage, torch.TypedStorage) else storage.nbytes()  # (no deprecation noise)
    needed = 0 if 0 in size else offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if needed > held:
        raise pickle.UnpicklingError(f"a tensor of size {list(size)} needs {needed} elements of its storage, "
                                     f"which holds {held}")
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = True, backward_hooks: Any = None, state: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter wraps something that is not a tensor")
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if func not in (_rebuild_tensor, _rebuild_parameter):
        raise pickle.UnpicklingError("a tensor subclass is rebuilt by a function outside the allow-list")
    return func(*args)


class _NdarrayClass:
    """What the name numpy.ndarray resolves to: only _reconstruct may use it (calling the real class
    with a shape from the file would allocate whatever the file asks for)."""


def _np_reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's pickled-array constructor: an empty array that the pickle's own data then fills."""
    if cls is not _NdarrayClass or tuple(shape) != (0,):
        raise pickle.UnpicklingError("a numpy array is reconstructed in a way numpy never pickles")
    return np._core.multiarray._reconstruct(np.ndarray, (0,), dtype)


def _create_array(f: Any, args: Any, state: Any, npdict: Any = None) -> np.ndarray:
    """dill's array constructor, limited to numpy's own reconstruction."""
    if f is not _np_reconstruct:
        raise pickle.UnpicklingError("a dill array is built by a function outside the allow-list")
    array = f(*args)
    array.__setstate__(state)
    return array


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor, for placeholders and plain dicts only."""
    if isinstance(cls, type) and issubclass(cls, (Placeholder, EasyDict, collections.OrderedDict)):
        return cls()
    raise pickle.UnpicklingError("copyreg._reconstructor is asked for a class outside the allow-list")


def _allowed() -> dict[str, Any]:
    table = {
        "torch_utils.persistence._reconstruct_persistent_obj": _reconstruct_persistent_obj,
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set, "builtins.frozenset": frozenset, "builtins.slice": slice,
        "builtins.complex": complex,
        "copyreg._reconstructor": _reconstructor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
        "torch.storage._load_from_bytes": _load_storage,
        "torch.Size": torch.Size, "torch.device": torch.device,
        "numpy.ndarray": _NdarrayClass, "numpy.dtype": np.dtype,
        "dill._dill._create_array": _create_array,
        "dnnlib.util.EasyDict": EasyDict,
    }
    # Old files name numpy.core, new ones numpy._core; both map to the objects already imported.
    for module in ("numpy.core", "numpy._core"):
        table[f"{module}.multiarray._reconstruct"] = _np_reconstruct
        table[f"{module}.multiarray.scalar"] = np._core.multiarray.scalar
        table[f"{module}.numeric._frombuffer"] = np._core.numeric._frombuffer
    for name in ("float16", "float32", "float64", "bfloat16", "half", "float", "double", "uint8", "int8",
                 "int16", "int32", "int64", "short", "int", "long", "bool", "complex64", "complex128"):
        table[f"torch.{name}"] = getattr(torch, name)
    return table


_ALLOWED = MappingProxyType(_allowed())


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 spellings (__builtin__, copy_reg, cPickle, ...) as pickle maps them for old protocols,
    for every protocol here: the deny-list must see `__builtin__.eval` as `builtins.eval`."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    if module in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


def _forbidden(module: str, name: str) -> bool:
    qualified = f"{module}.{name}"
    root = module.split(".")[0]
    return (root in _FORBIDDEN_MODULES or (module == "builtins" and name in _FORBIDDEN_BUILTINS)
            or qualified in _FORBIDDEN_NAMES)


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler whose globals are the allow-list, placeholders, or a refusal.

    `placeholders` lists the names that were replaced, for reporting and tests.
    """

    def __init__(self, file: IO[bytes]):
        super().__init__(file)
        self.placeholders: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        module, name = _python3_name(module, name)
        if _forbidden(module, name):
            shown = f"{_DISPLAY_MODULE.get(module, module)}.{name}"
            raise CheckpointError(f"this file calls {shown}; refusing to load it")
        qualified = f"{module}.{name}"
        if qualified in _ALLOWED:
            return _ALLOWED[qualified]
        if qualified not in self.placeholders:
            self.placeholders[qualified] = type(name, (Placeholder,), {"qualified_name": qualified, "__module__": __name__})
        return self.placeholders[qualified]

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not used by StyleGAN-XL checkpoints")
