"""One registry from a dataset name to its facts and its loader."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import cifar10, fashion_mnist, imagenet1k, imagenet_subsets, tiny_imagenet
from .base import DatasetInfo, ImageSet
from .lazy import LazyImageSet

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    info: Callable[[int | None], DatasetInfo]
    load: Callable[[str | Path | None, str, int | None], ImageSet | LazyImageSet]
    default_root: Path


def _fixed(info: DatasetInfo) -> Callable[[int | None], DatasetInfo]:
    def get(resolution: int | None) -> DatasetInfo:
        if resolution not in (None, info.resolution):
            raise ValueError(f"{info.name} comes at {info.resolution} px only, not {resolution}")
        return info
    return get


def _specs() -> dict[str, DatasetSpec]:
    specs = {
        "fashion-mnist": DatasetSpec(_fixed(fashion_mnist.INFO),
                                     lambda root, split, res: fashion_mnist.load_fashion_mnist(root, split),
                                     fashion_mnist.DEFAULT_ROOT),
        "cifar10": DatasetSpec(_fixed(cifar10.INFO),
                               lambda root, split, res: cifar10.load_cifar10(root, split),
                               cifar10.DEFAULT_ROOT),
        # Too large for memory: these two stream from disk through a bounded cache (lazy.py).
        "tiny-imagenet": DatasetSpec(_fixed(tiny_imagenet.INFO),
                                     lambda root, split, res: tiny_imagenet.load_tiny_imagenet(root, split),
                                     tiny_imagenet.DEFAULT_ROOT),
        "imagenet-1k": DatasetSpec(imagenet1k.info,
                                   lambda root, split, res: imagenet1k.load_imagenet1k(root, split, res),
                                   imagenet_subsets.DEFAULT_ROOT),
    }
    for name in imagenet_subsets.subsets():
        specs[name] = DatasetSpec(
            lambda res, name=name: imagenet_subsets.subset_info(name, res or 128),
            lambda root, split, res, name=name: imagenet_subsets.load_imagenet_subset(name, root, split, res or 128),
            imagenet_subsets.DEFAULT_ROOT)
    return specs


DATASETS: dict[str, DatasetSpec] = _specs()


def list_datasets() -> list[str]:
    return list(DATASETS)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_info(name: str, resolution: int | None = None) -> DatasetInfo:
    return _spec(name).info(resolution)


def load_dataset(name: str, split: str, root: str | Path | None = None,
                 resolution: int | None = None) -> ImageSet | LazyImageSet:
    """Load one split (into memory, or as a LazyImageSet for tiny-imagenet and imagenet-1k); raises
    DatasetError (with the fix) when files are missing or broken."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    spec = _spec(name)
    spec.info(resolution)
    return spec.load(root, split, resolution)
