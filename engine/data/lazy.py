"""A dataset split that stays on disk: image files decoded on demand, a bounded LRU cache of decoded images.

Tiny-ImageNet (100,000 training images) and ImageNet-1K (1.28 million) are too large to hold as one
uint8 tensor the way ImageSet does. LazyImageSet offers what the samplers and trainers use of ImageSet
(`info`, `labels`, `split`, `source`, `len()`, `class_indices()`, `take(index)` for uint8 images by
index, `normalized(index, device)` and `subset(index)`), but keeps only the file list and the labels
in memory. Images are decoded by `decode(path)` when asked for and kept in an LRU cache holding at
most `cache.max_images` of them; subsets (a hold-out split, a quick training subset) share their
parent's cache, so the bound holds for the dataset as a whole.

A file that cannot be decoded is refused when it is first read (DatasetError naming the file), not at
load time: checking 1.28 million JPEGs up front would take longer than most runs.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .base import DatasetError, DatasetInfo

# The cache's default budget; the image count follows from the resolution (see cache_for).
DEFAULT_CACHE_BYTES = 512 * 2**20

Decode = Callable[[str], np.ndarray]  # path -> uint8 [H, W, C]


class DecodedCache:
    """Least-recently-used decoded images by key, never more than `max_images` (thread-safe)."""

    def __init__(self, max_images: int):
        if max_images < 1:
            raise ValueError(f"the image cache must hold at least 1 image, got {max_images}")
        self.max_images = int(max_images)
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, load: Callable[[], torch.Tensor]) -> torch.Tensor:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return value
        value = load()  # outside the lock: decoding is the slow part, and two threads may decode at once
        with self._lock:
            self.misses += 1
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_images:
                self._items.popitem(last=False)
        return value


def cache_for(info: DatasetInfo, budget_bytes: int = DEFAULT_CACHE_BYTES) -> DecodedCache:
    """A cache of as many of `info`'s uint8 images as fit in `budget_bytes` (at least 1)."""
    per_image = info.channels * info.resolution * info.resolution
    return DecodedCache(max(1, budget_bytes // per_image))


@dataclass(frozen=True, eq=False)
class LazyImageSet:
    """One split of a dataset on disk: `files[i]` is image i, `labels[i]` its class."""

    info: DatasetInfo
    files: tuple[str, ...]
    labels: torch.Tensor
    decode: Decode
    cache: DecodedCache
    split: str = "train"
    source: str = field(default="", compare=False)
    class_ids: tuple[str, ...] = ()  # the on-disk name of each class (ImageNet wnids), in label order

    def __post_init__(self):
        if len(self.files) != len(self.labels):
            raise ValueError(f"{len(self.files)} files but {len(self.labels)} labels")
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be int64 [N], got {self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.files)

    def take(self, index: torch.Tensor | slice | Sequence[int] | None = None) -> torch.Tensor:
        """uint8 images [n, C, H, W] at `index` (None: all of them; slow for a large split)."""
        positions = _positions(index, len(self))
        if not positions:
            r = self.info.resolution
            return torch.empty((0, self.info.channels, r, r), dtype=torch.uint8)
        return torch.stack([self._image(i) for i in positions])

    def normalized(self, index: torch.Tensor | slice | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        return self.info.normalize(self.take(index).to(device).float() / 255)

    def class_indices(self) -> list[torch.Tensor]:
        order = torch.argsort(self.labels, stable=True)
        counts = torch.bincount(self.labels, minlength=self.info.num_classes).tolist()
        return list(order.split(counts))

    def subset(self, index: torch.Tensor, split: str | None = None) -> "LazyImageSet":
        positions = _positions(index, len(self))
        return LazyImageSet(self.info, tuple(self.files[i] for i in positions), self.labels[positions],
                            self.decode, self.cache, split or self.split, self.source, self.class_ids)

    def _image(self, i: int) -> torch.Tensor:
        path = self.files[i]
        return self.cache.get(path, lambda: self._decode(path))

    def _decode(self, path: str) -> torch.Tensor:
        array = self.decode(path)
        r, c = self.info.resolution, self.info.channels
        if array.dtype != np.uint8 or array.shape != (r, r, c):
            raise ValueError(f"the decoder gave {array.dtype} {array.shape} for {path}, expected uint8 ({r}, {r}, {c})")
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name (ImageFolder's order)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@cache
def _resize_crop(resolution: int):
    # torchvision costs seconds to import; only the image-folder datasets need it. The same transform as
    # the ImageNet subsets (imagenet_subsets.py): shorter side to `resolution`, then the centre square.
    from torchvision.transforms import CenterCrop, Compose, Resize
    return Compose([Resize(resolution), CenterCrop(resolution)])


def decode_image(path: str, resolution: int) -> np.ndarray:
    """An image file as uint8 RGB [resolution, resolution, 3]: shorter side resized, centre crop (an image
    already of that size is unchanged). A file that is not a readable image raises DatasetError."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (resolution, resolution):
                img = _resize_crop(resolution)(img)
            return np.array(img, dtype=np.uint8)  # a writable copy (torch.from_numpy wants one)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path} is not a readable image ({exc}); remove or replace it.") from exc


def image_decoder(resolution: int) -> Decode:
    return partial(decode_image, resolution=resolution)


def _positions(index, n: int) -> list[int]:
    if index is None:
        return list(range(n))
    if isinstance(index, slice):
        return list(range(n))[index]
    if isinstance(index, torch.Tensor):
        if index.dtype == torch.bool:
            index = torch.nonzero(index).flatten()
        index = index.flatten().tolist()
    positions = [int(i) + n if int(i) < 0 else int(i) for i in index]
    bad = [i for i in positions if not 0 <= i < n]
    if bad:
        raise IndexError(f"index {bad[0]} is out of range for {n} images")
    return positions
