"""`python -m engine datasets`: list the datasets and whether their files are present."""
from __future__ import annotations

import argparse

from ..data import DATASETS, DatasetError, dataset_info, load_dataset

HELP = "list the known datasets and check which of them can be loaded here"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", action="store_true", help="try to load each test split (slow for ImageNet)")
    p.add_argument("--data-root", default=None, help="folder to check instead of each dataset's default")


def run(args: argparse.Namespace) -> int:
    for name, spec in DATASETS.items():
        info = dataset_info(name)
        line = f"{name:16s} {info.channels} ch {info.resolution:3d} px {info.num_classes} classes  default root {spec.default_root}"
        if args.check:
            try:
                load_dataset(name, "test", args.data_root)
                line += "  [ok]"
            except DatasetError as exc:
                line += f"  [missing: {exc}]"
        print(line)
    return 0
