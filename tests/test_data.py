import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import DatasetError, RealSampler, dataset_info, holdout_split, list_datasets, load_dataset
from engine.data.fashion_mnist import DEFAULT_ROOT as FMNIST_ROOT
from engine.data.idx import read_idx
from engine.data.imagenet_subsets import imagenet_indices, subsets

needs_fmnist = pytest.mark.skipif(not (FMNIST_ROOT / "t10k-images-idx3-ubyte.gz").exists(),
                                  reason="Debian's dataset-fashion-mnist is not installed (./bootstrap.sh installs it)")


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def fake_fmnist(root: Path, n: int = 20, compress: bool = True) -> None:
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n), ("t10k", n // 2)):
        suffix = ".gz" if compress else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(count) % 10).astype(np.uint8), compress)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", a, compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), a)


def test_idx_truncated_and_corrupt(tmp_path):
    a = np.zeros((5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "a", a)
    raw = (tmp_path / "a").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-10])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "magic")
    (tmp_path / "gz").write_bytes(gzip.compress(raw)[:40])
    with pytest.raises(DatasetError, match="cannot be read"):
        read_idx(tmp_path / "gz")


def test_fashion_mnist_from_user_folder(tmp_path):
    fake_fmnist(tmp_path, compress=False)
    data = load_dataset("fashion-mnist", "train", tmp_path)
    assert data.images.shape == (20, 1, 32, 32) and data.images.dtype == torch.uint8
    assert data.images[:, :, :2].max() == 0 and data.images[:, :, :, -2:].max() == 0  # zero padding
    x = data.normalized()
    assert x.min() >= -1 and x.max() <= 1 and x[0, 0, 0, 0] == -1  # background is -1
    assert data.labels.tolist()[:3] == [0, 1, 2]


def test_fashion_mnist_missing_file_names_the_fix(tmp_path):
    fake_fmnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test", tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("fashion-mnist", "test", tmp_path / "nowhere")


def test_fashion_mnist_mismatched_pair(tmp_path):
    fake_fmnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8), True)
    with pytest.raises(DatasetError, match="does not match"):
        load_dataset("fashion-mnist", "train", tmp_path)


@needs_fmnist
def test_real_fashion_mnist():
    test = load_dataset("fashion-mnist", "test")
    assert len(test) == 10000 and test.images.shape[1:] == (1, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_registry():
    names = list_datasets()
    assert {"fashion-mnist", "cifar10", "imagenette", "imagewoof", "imagenet-a", "imagenet-cats"} <= set(names)
    info = dataset_info("fashion-mnist")
    assert (info.channels, info.resolution, info.num_classes) == (1, 32, 10)
    assert dataset_info("imagenet-b", 256).resolution == 256
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*fashion-mnist"):
        dataset_info("mnist")
    with pytest.raises(ValueError, match="32 px only"):
        dataset_info("cifar10", 128)


def test_imagenet_subsets_are_distinct_tens():
    lists = subsets()
    assert len(lists) == 10
    for name, classes in lists.items():
        assert len({c["wnid"] for c in classes}) == 10, name
    signatures = {tuple(imagenet_indices(n)) for n in lists}
    assert len(signatures) == 10  # no subset is a copy of another
    assert imagenet_indices("imagenette")[:3] == (0, 217, 482)


def fake_cifar(root: Path, per_batch: int = 10) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), "labels": list(range(per_batch))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)


def test_cifar10_layout(tmp_path):
    fake_cifar(tmp_path)
    train = load_dataset("cifar10", "train", tmp_path)
    assert train.images.shape == (50, 3, 32, 32) and len(load_dataset("cifar10", "test", tmp_path)) == 10
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", "train", tmp_path / "empty")


class Boom:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_refuses_code_in_pickles(tmp_path, capsys):
    fake_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({"data": Boom(), "labels": []}, fh)
    with pytest.raises(DatasetError, match="refusing to load builtins.print"):
        load_dataset("cifar10", "test", tmp_path)
    assert "pwned" not in capsys.readouterr().out


def fake_imagenet(root: Path, name: str, per_class: int = 2, skip: int | None = None) -> None:
    for label, c in enumerate(subsets()[name]):
        if label == skip:
            continue
        folder = root / "val" / c["wnid"]
        folder.mkdir(parents=True)
        for k in range(per_class):
            Image.new("RGB", (160, 130), (label * 20, k * 50, 7)).save(folder / f"img{k}.JPEG")


def test_imagenet_subset_folder(tmp_path):
    fake_imagenet(tmp_path, "imagewoof")
    data = load_dataset("imagewoof", "test", tmp_path, resolution=128)
    assert data.images.shape == (20, 3, 128, 128)
    assert data.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert abs(int(data.images[2, 0, 64, 64]) - 20) <= 2  # class 1 is red 20: order follows the subset list


def test_imagenet_subset_missing_class(tmp_path):
    fake_imagenet(tmp_path, "imagenette", skip=3)
    missing = subsets()["imagenette"][3]["wnid"]
    with pytest.raises(DatasetError, match=f"lacks the class folders {missing}"):
        load_dataset("imagenette", "test", tmp_path)


def test_sampler_and_holdout(tmp_path):
    fake_fmnist(tmp_path, n=60)
    data = load_dataset("fashion-mnist", "train", tmp_path)
    train, val = holdout_split(data, per_class=2, seed=0)
    assert len(train) == 40 and len(val) == 20 and val.split == "val"
    assert torch.bincount(val.labels).tolist() == [2] * 10
    s1 = RealSampler(train, "cpu", torch.Generator().manual_seed(1))
    s2 = RealSampler(train, "cpu", torch.Generator().manual_seed(1))
    a, b = s1.sample(4, 3), s2.sample(4, 3)
    assert torch.equal(a, b) and a.shape == (3, 1, 32, 32)
    x, y = s1.sample_all(2)
    assert y.tolist() == [c for c in range(10) for _ in range(2)]
