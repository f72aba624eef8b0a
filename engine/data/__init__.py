"""Datasets: a registry from name to facts and loader, uint8 in memory (or on disk behind a bounded
cache: LazyImageSet), normalised on demand."""
from .base import DatasetError, DatasetInfo, ImageSet
from .lazy import LazyImageSet
from .registry import DATASETS, dataset_info, list_datasets, load_dataset
from .sampler import RealSampler, holdout_split

__all__ = ["DATASETS", "DatasetError", "DatasetInfo", "ImageSet", "LazyImageSet", "RealSampler", "dataset_info",
           "holdout_split", "list_datasets", "load_dataset"]
