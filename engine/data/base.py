"""What every dataset loader returns: uint8 images (in memory here, or on disk: lazy.py) plus the facts to
normalise them."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


class DatasetError(ValueError):
    """A dataset cannot be read; the message names the file or folder and how to fix it."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    resolution: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalize(self, images_01: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the dataset's normalised space (what networks see)."""
        mean, std = self._stats(images_01)
        return (images_01 - mean) / std

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """The dataset's normalised space -> [0, 1]."""
        mean, std = self._stats(images)
        return images * std + mean

    def from_generator(self, images_pm1: torch.Tensor) -> torch.Tensor:
        """Generator output in [-1, 1] -> the normalised space, as real images are normalised."""
        return self.normalize((images_pm1 + 1) / 2)

    def to_generator(self, images: torch.Tensor) -> torch.Tensor:
        return self.denormalize(images) * 2 - 1

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.channels, 1, 1)
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std


@dataclass(frozen=True)
class ImageSet:
    """One split of a dataset: uint8 images [N, C, H, W] and int64 labels [N]."""

    info: DatasetInfo
    images: torch.Tensor
    labels: torch.Tensor
    split: str = "train"
    source: str = field(default="", compare=False)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """uint8 images [n, C, H, W] at `index` (None: all); what LazyImageSet (lazy.py) offers too."""
        return self.images if index is None else self.images[index]

    def normalized(self, index: torch.Tensor | slice | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        images = self.take(index)
        return self.info.normalize(images.to(device).float() / 255)

    def class_indices(self) -> list[torch.Tensor]:
        return [torch.nonzero(self.labels == c).flatten() for c in range(self.info.num_classes)]

    def subset(self, index: torch.Tensor, split: str | None = None) -> "ImageSet":
        return ImageSet(self.info, self.images[index], self.labels[index], split or self.split, self.source)
