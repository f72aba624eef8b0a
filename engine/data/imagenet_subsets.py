"""ImageNet subsets (ImageNette, ImageWoof, ImageNet-A..E, Birds, Fruits, Cats) from an image-folder tree.

Layout: `<root>/train/<wnid>/*.JPEG` and `<root>/val/<wnid>/*.JPEG` (the `test` split reads `val`),
as torchvision's ImageFolder and the ImageNet devkit arrange them. Only the subset's ten classes are
read; label = position in the subset's list, as in GLaD and H-PD.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .base import DatasetError, DatasetInfo, ImageSet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESOLUTIONS = (128, 256)
_SUFFIXES = {".jpeg", ".jpg", ".png"}
_SPLIT_FOLDER = {"train": "train", "test": "val"}
DEFAULT_ROOT = Path("data/imagenet")


@cache
def subsets() -> dict[str, tuple[dict, ...]]:
    """Subset name -> its classes in label order ({imagenet_index, wnid, name})."""
    with open(Path(__file__).with_name("imagenet_subsets.json")) as fh:
        return {k: tuple(v) for k, v in json.load(fh).items()}


def subset_info(name: str, resolution: int) -> DatasetInfo:
    classes = subsets()[name]
    return DatasetInfo(name, 3, resolution, tuple(c["name"] for c in classes), IMAGENET_MEAN, IMAGENET_STD)


def imagenet_indices(name: str) -> tuple[int, ...]:
    """The ImageNet-1k class index of each label, for conditioning an ImageNet GAN."""
    return tuple(c["imagenet_index"] for c in subsets()[name])


def load_imagenet_subset(name: str, root: str | Path | None, split: str, resolution: int) -> ImageSet:
    if resolution not in RESOLUTIONS:
        raise DatasetError(f"ImageNet subsets load at {RESOLUTIONS} px, not {resolution}.")
    base = (Path(root) if root else DEFAULT_ROOT) / _SPLIT_FOLDER[split]
    classes = subsets()[name]
    missing = [c["wnid"] for c in classes if not (base / c["wnid"]).is_dir()]
    if missing:
        raise DatasetError(
            f"{base} lacks the class folders {', '.join(missing)} of {name}; put each class's images in "
            f"{base}/<wnid>/ (ImageFolder layout of the ImageNet {_SPLIT_FOLDER[split]} set) and pass the "
            "folder above it with --data-root.")
    # torchvision costs seconds to import; only ImageNet loading needs it.
    from torchvision.transforms import CenterCrop, Compose, Resize
    transform = Compose([Resize(resolution), CenterCrop(resolution)])
    images, labels = [], []
    for label, c in enumerate(classes):
        files = sorted(p for p in (base / c["wnid"]).iterdir() if p.suffix.lower() in _SUFFIXES)
        if not files:
            raise DatasetError(f"{base / c['wnid']} holds no .JPEG/.jpg/.png images.")
        images.extend(_load_image(p, transform) for p in files)
        labels.extend([label] * len(files))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(subset_info(name, resolution), x, torch.tensor(labels), split, str(base))


def _load_image(path: Path, transform) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(transform(img.convert("RGB")), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path} is not a readable image ({exc}); remove or replace it.") from exc
