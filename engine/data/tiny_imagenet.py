"""Tiny-ImageNet (200 classes, 64 px) in its distributed layout, streamed from disk (lazy.py).

Layout of `tiny-imagenet-200/` (the zip's top folder; --data-root may name it or the folder above it):
`wnids.txt` (the 200 wnids, one per line), `train/<wnid>/images/*.JPEG` (500 per class) and
`val/images/*.JPEG` (50 per class) labelled by `val/val_annotations.txt` (tab-separated: file name,
wnid, then a box). The test images are unlabelled, so this API's "test" split is Tiny's val split, as
in SRe²L and every paper that reports Tiny-ImageNet accuracy. Label = position of the wnid in the
sorted wnid list (SRe²L's and torchvision ImageFolder's order). Normalisation: SRe²L's Tiny statistics
(VILA-Lab/SRe2L `*small_dataset/utils.py`).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .base import DatasetError, DatasetInfo
from .lazy import LazyImageSet, cache_for, image_decoder, image_files

NAME = "tiny-imagenet"
FOLDER = "tiny-imagenet-200"
NUM_CLASSES = 200
RESOLUTION = 64
# The wnids are read from disk; the facts must not depend on files being present, so classes are named
# by their label (the set's `class_ids` gives the wnid of each).
INFO = DatasetInfo(NAME, 3, RESOLUTION, tuple(f"class {i:03d}" for i in range(NUM_CLASSES)),
                   (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
DEFAULT_ROOT = Path("data")
HOW_TO_GET = ("download tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip) on a machine "
              f"with internet, unzip it so that <data-root>/{FOLDER}/wnids.txt exists, and pass that data-root "
              "with --data-root")
_WNID = re.compile(r"n\d{8}")


def dataset_folder(root: str | Path | None) -> Path:
    """The folder holding wnids.txt: `root` itself or `root/tiny-imagenet-200`."""
    base = Path(root) if root else DEFAULT_ROOT
    for folder in (base, base / FOLDER):
        if (folder / "wnids.txt").is_file():
            return folder
    raise DatasetError(f"Tiny-ImageNet's wnids.txt is in neither {base} nor {base / FOLDER}; {HOW_TO_GET}.")


def read_wnids(folder: Path) -> tuple[str, ...]:
    """The 200 wnids in label order (sorted)."""
    path = folder / "wnids.txt"
    try:
        lines = path.read_text().split()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} cannot be read ({exc}); replace it with the zip's copy.") from exc
    bad = [w for w in lines if not _WNID.fullmatch(w)]
    if bad or len(set(lines)) != NUM_CLASSES or len(lines) != NUM_CLASSES:
        what = f"has {bad[0]!r}, which is not a wnid" if bad else f"lists {len(set(lines))} distinct wnids in {len(lines)} lines"
        raise DatasetError(f"{path} {what}; Tiny-ImageNet's wnids.txt lists its {NUM_CLASSES} wnids (n########), "
                           "one per line: replace it with the zip's copy.")
    return tuple(sorted(lines))


def load_tiny_imagenet(root: str | Path | None, split: str, cache_bytes: int | None = None) -> LazyImageSet:
    folder = dataset_folder(root)
    wnids = read_wnids(folder)
    files, labels = _train(folder, wnids) if split == "train" else _val(folder, wnids)
    cache = cache_for(INFO) if cache_bytes is None else cache_for(INFO, cache_bytes)
    return LazyImageSet(INFO, tuple(files), torch.tensor(labels, dtype=torch.int64), image_decoder(RESOLUTION),
                        cache, split, str(folder), wnids)


def _train(folder: Path, wnids: tuple[str, ...]) -> tuple[list[str], list[int]]:
    files, labels = [], []
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        if not images.is_dir():
            raise DatasetError(f"{images} is missing; Tiny-ImageNet keeps each class's training images in "
                               f"train/<wnid>/images/ ({HOW_TO_GET}).")
        found = image_files(images)
        if not found:
            raise DatasetError(f"{images} holds no .JPEG images; restore the class's files from the zip.")
        files.extend(str(p) for p in found)
        labels.extend([label] * len(found))
    return files, labels


def _val(folder: Path, wnids: tuple[str, ...]) -> tuple[list[str], list[int]]:
    images, notes = folder / "val" / "images", folder / "val" / "val_annotations.txt"
    if not notes.is_file():
        raise DatasetError(f"{notes} is missing; Tiny-ImageNet's val split is labelled by it (tab-separated file "
                           f"name, wnid, box): {HOW_TO_GET}.")
    if not images.is_dir():
        raise DatasetError(f"{images} is missing; Tiny-ImageNet's val images go there: {HOW_TO_GET}.")
    present = {p.name for p in image_files(images)}
    label_of = {w: i for i, w in enumerate(wnids)}
    try:
        lines = notes.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{notes} cannot be read ({exc}); replace it with the zip's copy.") from exc
    entries: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DatasetError(f"{notes} line {number} is not tab-separated 'file name, wnid, box'; replace the "
                               "file with the zip's copy.")
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in label_of:
            raise DatasetError(f"{notes} line {number} labels {name} with {wnid}, which is not in wnids.txt; the "
                               "annotations and wnids.txt come from different copies: use the zip's pair.")
        if name not in present:
            raise DatasetError(f"{notes} line {number} names {name}, which is not in {images}; restore the val "
                               "images from the zip.")
        entries[name] = label_of[wnid]
    if not entries:
        raise DatasetError(f"{notes} labels no images; replace it with the zip's copy.")
    names = sorted(entries)
    return [str(images / n) for n in names], [entries[n] for n in names]
