"""CIFAR-10 in torchvision's on-disk layout (`<root>/cifar-10-batches-py/`), read without downloading.

The batches are Python pickles. We read them with an unpickler that only rebuilds numpy arrays, so
a tampered file cannot run code; torchvision's own class would also insist on the archive's md5.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .base import DatasetError, DatasetInfo, ImageSet

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
INFO = DatasetInfo("cifar10", 3, 32, CLASS_NAMES, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
DEFAULT_ROOT = Path("data")
FOLDER = "cifar-10-batches-py"
_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
HOW_TO_GET = ("download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html on a "
              f"machine with internet, extract it so that <data-root>/{FOLDER}/data_batch_1 exists, "
              "and pass that data-root with --data-root")

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_cifar10(root: str | Path | None, split: str) -> ImageSet:
    folder = (Path(root) if root else DEFAULT_ROOT) / FOLDER
    if not folder.is_dir():
        raise DatasetError(f"CIFAR-10 folder {folder} does not exist; {HOW_TO_GET}.")
    images, labels = [], []
    for name in _FILES[split]:
        batch = _read_batch(folder / name)
        images.append(batch[0])
        labels.append(batch[1])
    x = torch.from_numpy(np.concatenate(images)).reshape(-1, 3, 32, 32)
    y = torch.from_numpy(np.concatenate(labels).astype("int64"))
    return ImageSet(INFO, x, y, split, str(folder))


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"{path} is missing; {HOW_TO_GET}.")
    try:
        with open(path, "rb") as fh:
            batch = _ArrayUnpickler(fh, encoding="latin1").load()
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{path} is not a readable CIFAR-10 batch ({exc}); replace it with an intact copy.") from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DatasetError(f"{path} holds data of shape {data.shape} with {len(labels)} labels; expected [N, 3072] with N labels.")
    if labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
        raise DatasetError(f"{path} has labels outside 0..9.")
    return data, labels
