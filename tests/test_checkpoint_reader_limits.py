"""The StyleGAN-XL checkpoint reader allocates nothing a file merely claims: tensors larger than their
storage, storage blobs larger than their bytes, bytearray/ndarray constructors; Python 2 names meet the
deny-list under their Python 3 names; running out of memory is one sentence naming the file."""
from __future__ import annotations

import collections
import io
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.serialization

from engine.generators.loader import check_generator_spec
from engine.generators.stylegan_xl import CheckpointError, read_checkpoint
from engine.generators.stylegan_xl.unpickler import Placeholder, SafeUnpickler

torch.set_num_threads(1)

TERA = 10 ** 12


def _storage_blob(storage_cls=torch.FloatStorage, numel: int = 4, data: bytes = b"\0" * 16) -> bytes:
    """A nested legacy torch.save of one storage, as StyleGAN-XL pickles hold them; `numel` is what the
    blob claims, `data` what it holds."""
    buf = io.BytesIO()
    pickle.dump(torch.serialization.MAGIC_NUMBER, buf, protocol=2)
    pickle.dump(torch.serialization.PROTOCOL_VERSION, buf, protocol=2)
    pickle.dump({"protocol_version": torch.serialization.PROTOCOL_VERSION, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, buf, protocol=2)

    class Pids(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage_cls, "0", "cpu", numel, None) if obj == "the storage" else None

    Pids(buf, protocol=2).dump("the storage")
    pickle.dump(["0"], buf, protocol=2)
    buf.write(struct.pack("<q", numel))
    buf.write(data)
    return buf.getvalue()


class _Call:
    """Pickles as func(*args): lets a test write what a hostile file would."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _tensor(size, stride, offset=0, blob=None):
    storage = _Call(torch.storage._load_from_bytes, blob or _storage_blob())
    return _Call(torch._utils._rebuild_tensor_v2, storage, offset, size, stride, False, collections.OrderedDict())


def _load(obj):
    return SafeUnpickler(io.BytesIO(pickle.dumps(obj, protocol=4))).load()


def _write(tmp_path, obj=None, raw: bytes | None = None):
    path = tmp_path / "g.pkl"
    path.write_bytes(raw if raw is not None else pickle.dumps({"G_ema": obj}, protocol=4))
    return path


def test_an_honest_tensor_still_rebuilds():
    t = _load(_tensor((2, 2), (2, 1)))
    assert t.shape == (2, 2) and t.dtype == torch.float32
    assert _load(_tensor((3, 4), (0, 1))).shape == (3, 4)  # stride-0 views, as the fixtures hold


@pytest.mark.parametrize("size, stride, offset", [
    ((TERA,), (1,), 0),          # 10^12 elements over a 4-element storage: would allocate 4 TB
    ((2, 2), (2, 1), 1),         # one element past the end
    ((4,), (2,), 0),             # the stride walks off the storage
    ((2,), (1, 1), 0),           # size and stride disagree
    ((-1,), (1,), 0),
    ((2,), (1,), -1),
])
def test_a_tensor_larger_than_its_storage_is_refused(tmp_path, size, stride, offset):
    path = _write(tmp_path, _tensor(size, stride, offset))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "truncated or corrupt" in message and "\n" not in message


def test_a_storage_blob_claiming_more_than_it_holds_is_refused_before_allocating(tmp_path):
    blob = _storage_blob(numel=TERA)  # 4 TB claimed, 16 bytes held
    with pytest.raises(pickle.UnpicklingError, match=f"claims {4 * TERA} bytes but its blob holds only"):
        _load(_Call(torch.storage._load_from_bytes, blob))
    with pytest.raises(CheckpointError, match="g.pkl is truncated or corrupt"):
        read_checkpoint(_write(tmp_path, _Call(torch.storage._load_from_bytes, blob)))


def test_a_storage_blob_naming_other_globals_is_refused():
    class Evil(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", print, "0", "cpu", 4, None) if obj == "s" else None
    buf = io.BytesIO(_storage_blob()[:0])
    for value in (torch.serialization.MAGIC_NUMBER, 1001, {}):
        pickle.dump(value, buf, protocol=2)
    Evil(buf, protocol=2).dump("s")
    with pytest.raises(pickle.UnpicklingError, match="a storage blob names .*print"):
        _load(_Call(torch.storage._load_from_bytes, buf.getvalue()))


@pytest.mark.parametrize("gadget", [
    _Call(bytearray, TERA),             # bytearray(10^12): a terabyte of zeros
    _Call(np.ndarray, (TERA,)),         # numpy.ndarray(shape) allocates the shape
    _Call(np.zeros, (TERA,)),           # never on the allow-list
])
def test_allocation_gadgets_are_not_called(tmp_path, gadget):
    try:
        loaded = _load({"x": gadget})["x"]
    except pickle.UnpicklingError:
        return  # refused outright is fine too
    except TypeError:
        return  # numpy.ndarray resolves to a marker that cannot be called
    assert isinstance(loaded, Placeholder)  # recorded, never run
    with pytest.raises(CheckpointError):
        read_checkpoint(_write(tmp_path, gadget))


def test_numpy_arrays_still_come_from_their_pickled_data():
    array = _load({"a": np.arange(6, dtype=np.float32).reshape(2, 3)})["a"]
    assert isinstance(array, np.ndarray) and array.tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("module, name, shown", [
    ("__builtin__", "eval", "builtins.eval"),
    ("__builtin__", "open", "builtins.open"),
    ("cPickle", "loads", "pickle.loads"),
    ("commands", "getoutput", "subprocess.getoutput"),
])
def test_python2_names_are_mapped_before_the_deny_list(tmp_path, module, name, shown):
    raw = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"q\x00."
    with pytest.raises(CheckpointError, match=f"this file calls {shown.replace('.', '[.]')}; refusing to load it"):
        read_checkpoint(_write(tmp_path, raw=raw))


def test_python2_copy_reg_still_reads():
    raw = b"\x80\x02ccopy_reg\n_reconstructor\nq\x00."
    assert SafeUnpickler(io.BytesIO(raw)).load() is not None


def test_running_out_of_memory_is_one_sentence_naming_the_file(tmp_path):
    # BINBYTES8 claiming 10^12 bytes: the unpickler's own buffer cannot be allocated.
    raw = b"\x80\x04\x8e" + struct.pack("<Q", TERA) + b"abc"
    path = _write(tmp_path, raw=raw)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "ran out of memory (MemoryError)" in message


@pytest.mark.parametrize("content, match", [
    (b"", "is not a pickle file"),
    (b"PK\x03\x04 a zip", "is not a pickle file"),
    (b"\x80\x09 protocol nine", "is not a pickle file"),
])
def test_the_start_check_reads_two_bytes_only(tmp_path, content, match):
    path = tmp_path / "g.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        check_generator_spec(str(path))
    (tmp_path / "g.pt").write_bytes(content)
    with pytest.raises(ValueError, match="is not a supported generator checkpoint"):
        check_generator_spec(str(tmp_path / "g.pt"))
    (tmp_path / "d.pkl").mkdir(exist_ok=True)
    with pytest.raises(ValueError, match="is not a file"):
        check_generator_spec(str(tmp_path / "d.pkl"))
    path.write_bytes(pickle.dumps({"G_ema": None}, protocol=4))
    check_generator_spec(str(path))  # a pickle: the rest is the loader's to judge
