"""Class-wise random batches of real images, drawn from an explicit generator."""
from __future__ import annotations

import torch

from .base import ImageSet
from .lazy import LazyImageSet


class RealSampler:
    """Draws normalised real images per class, normalised per batch. An in-memory ImageSet is moved to
    `device` once; a LazyImageSet stays on disk and only the drawn images are decoded (through its
    bounded cache) and moved. Both draw the same indices from the same generator."""

    def __init__(self, data: ImageSet | LazyImageSet, device: torch.device | str, generator: torch.Generator):
        self.data = data
        self.info = data.info
        self.device = torch.device(device)
        self.generator = generator
        self._images = data.images.to(self.device) if isinstance(data, ImageSet) else None
        self._by_class = data.class_indices()
        empty = [data.info.class_names[c] for c, idx in enumerate(self._by_class) if len(idx) == 0]
        if empty:
            raise ValueError(f"the {data.split} split has no images of class(es) {', '.join(empty)}")

    def indices(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n indices of class c without replacement (with replacement if the class has fewer)."""
        pool, gen = self._by_class[c], generator or self.generator
        if n <= len(pool):
            pick = torch.randperm(len(pool), generator=gen)[:n]
        else:
            pick = torch.randint(len(pool), (n,), generator=gen)
        return pool[pick]

    def sample(self, c: int, n: int) -> torch.Tensor:
        return self._normalize(self._take(self.indices(c, n)))

    def sample_all(self, n_per_class: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n images of every class, class-major, with their labels; from `generator` if given (a consumer
        with a stream of its own), else the sampler's."""
        idx = torch.cat([self.indices(c, n_per_class, generator) for c in range(self.info.num_classes)])
        return self._normalize(self._take(idx)), self.data.labels[idx].to(self.device)

    def _take(self, idx: torch.Tensor) -> torch.Tensor:
        if self._images is not None:
            return self._images[idx.to(self.device)]
        return self.data.take(idx).to(self.device)

    def _normalize(self, images_u8: torch.Tensor) -> torch.Tensor:
        return self.info.normalize(images_u8.float() / 255)


def holdout_split(data: ImageSet | LazyImageSet, per_class: int, seed: int) -> tuple[ImageSet | LazyImageSet,
                                                                                     ImageSet | LazyImageSet]:
    """Split `per_class` images of every class off the training set as a validation set."""
    gen = torch.Generator().manual_seed(seed)
    held = []
    for idx in data.class_indices():
        if len(idx) <= per_class:
            raise ValueError(f"cannot hold out {per_class} images per class from a class of {len(idx)}")
        held.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    held_idx = torch.cat(held)
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[held_idx] = False
    return data.subset(torch.nonzero(keep).flatten()), data.subset(held_idx.sort().values, split="val")
