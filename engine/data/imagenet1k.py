"""ImageNet-1K (1000 classes) from an image-folder tree, streamed from disk (lazy.py).

Layout: `<root>/train/<wnid>/*.JPEG` and `<root>/val/<wnid>/*.JPEG` (the `test` split reads `val`), the
tree the ImageNet subsets read too (imagenet_subsets.py). Label = position of the wnid in the sorted
list of the 1000 class folders: torchvision's ImageFolder order, which is the order of torchvision's
pretrained ImageNet classifiers and StyleGAN-XL's ImageNet conditioning (class 0 = n01440764, tench).
The devkit's ILSVRC2012_ID numbering is a different order and is not used. Images: shorter side
resized to the resolution, then the centre square (64, 128 or 256 px; 128 unless asked).

The repo ships no list of the 1000 wnids, so the folders are checked by count (1000 wnid-named folders)
and against the wnids it does know (the subsets' classes, with their ImageNet index). Class names come
from torchvision's ImageNet weights, which list them in the same sorted-wnid order.
"""
from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import torch

from .base import DatasetError, DatasetInfo
from .imagenet_subsets import DEFAULT_ROOT, IMAGENET_MEAN, IMAGENET_STD, subsets
from .lazy import LazyImageSet, cache_for, image_decoder, image_files

NAME = "imagenet-1k"
NUM_CLASSES = 1000
RESOLUTIONS = (64, 128, 256)  # StyleGAN-XL's ImageNet checkpoints
DEFAULT_RESOLUTION = 128
_SPLIT_FOLDER = {"train": "train", "test": "val"}
_WNID = re.compile(r"n\d{8}")
HOW_TO_GET = ("put each class's images in <data-root>/train/<wnid>/ and <data-root>/val/<wnid>/ (the ImageFolder "
              "layout of the ILSVRC2012 train and val sets, val sorted into class folders) and pass that data-root "
              "with --data-root")


@cache
def class_names() -> tuple[str, ...]:
    # torchvision costs seconds to import; only ImageNet-1K's facts need it.
    from torchvision.models import ResNet18_Weights
    names = tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    assert len(names) == NUM_CLASSES, len(names)
    return names


def info(resolution: int | None = None) -> DatasetInfo:
    resolution = DEFAULT_RESOLUTION if resolution is None else resolution
    if resolution not in RESOLUTIONS:
        raise ValueError(f"{NAME} loads at {', '.join(map(str, RESOLUTIONS))} px, not {resolution}")
    return DatasetInfo(NAME, 3, resolution, class_names(), IMAGENET_MEAN, IMAGENET_STD)


@cache
def known_wnids() -> dict[str, int]:
    """wnid -> ImageNet-1K index of every class the subsets name."""
    return {c["wnid"]: c["imagenet_index"] for classes in subsets().values() for c in classes}


def class_folders(base: Path) -> tuple[str, ...]:
    """The 1000 wnids of `base`'s class folders in label order, checked against the known wnids."""
    if not base.is_dir():
        raise DatasetError(f"ImageNet-1K folder {base} does not exist; {HOW_TO_GET}.")
    wnids = tuple(sorted(p.name for p in base.iterdir() if p.is_dir() and _WNID.fullmatch(p.name)))
    if len(wnids) != NUM_CLASSES:
        raise DatasetError(f"{base} has {len(wnids)} wnid class folders, not ImageNet-1K's {NUM_CLASSES}; {HOW_TO_GET}.")
    position = {w: i for i, w in enumerate(wnids)}
    for wnid, index in sorted(known_wnids().items(), key=lambda kv: kv[1]):
        if position.get(wnid) != index:
            found = "is missing" if wnid not in position else f"sorts to position {position[wnid]}"
            raise DatasetError(f"{base}/{wnid} (ImageNet class {index}) {found}, so these 1000 folders are not "
                               f"ImageNet-1K's classes; {HOW_TO_GET}.")
    return wnids


def load_imagenet1k(root: str | Path | None, split: str, resolution: int | None = None,
                    cache_bytes: int | None = None) -> LazyImageSet:
    facts = info(resolution)
    base = (Path(root) if root else DEFAULT_ROOT) / _SPLIT_FOLDER[split]
    wnids = class_folders(base)
    files, labels = [], []
    for label, wnid in enumerate(wnids):
        found = image_files(base / wnid)
        if not found:
            raise DatasetError(f"{base / wnid} holds no .JPEG/.jpg/.png images; restore the class's files.")
        files.extend(str(p) for p in found)
        labels.extend([label] * len(found))
    cache = cache_for(facts) if cache_bytes is None else cache_for(facts, cache_bytes)
    return LazyImageSet(facts, tuple(files), torch.tensor(labels, dtype=torch.int64),
                        image_decoder(facts.resolution), cache, split, str(base), wnids)
