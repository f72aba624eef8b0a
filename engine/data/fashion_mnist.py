"""Fashion-MNIST from its four IDX files, zero-padded by 2 pixels to 32x32.

Normalised with mean 0.5 and std 0.5, so the engine sees images in [-1, 1] with background -1:
the same range the generators produce, so no conversion is needed between them.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .base import DatasetError, DatasetInfo, ImageSet
from .idx import read_idx

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
INFO = DatasetInfo("fashion-mnist", 1, 32, CLASS_NAMES, (0.5,), (0.5,))
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
HOW_TO_GET = ("install Debian's package with `apt-get install dataset-fashion-mnist` (files land in "
              f"{DEFAULT_ROOT}), or download the four IDX files from "
              "https://github.com/zalandoresearch/fashion-mnist and pass their folder with --data-root")


def load_fashion_mnist(root: str | Path | None, split: str) -> ImageSet:
    root = Path(root) if root else DEFAULT_ROOT
    images_name, labels_name = _FILES[split]
    images = read_idx(_find(root, images_name))
    labels = read_idx(_find(root, labels_name))
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(f"{root / images_name} holds images of shape {images.shape[1:]}, not 28x28 Fashion-MNIST.")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(f"{root / labels_name} holds {len(labels)} labels for {len(images)} images; the pair does not match.")
    if labels.max() >= len(CLASS_NAMES):
        raise DatasetError(f"{root / labels_name} has label {labels.max()}; Fashion-MNIST labels are 0..9.")
    x = F.pad(torch.from_numpy(images.copy()), (2, 2, 2, 2)).unsqueeze(1)
    y = torch.from_numpy(labels.astype("int64"))
    return ImageSet(INFO, x, y, split, str(root))


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    if not root.is_dir():
        raise DatasetError(f"Fashion-MNIST folder {root} does not exist; {HOW_TO_GET}.")
    raise DatasetError(f"{root} has no {name} (or {name}.gz); {HOW_TO_GET}.")
