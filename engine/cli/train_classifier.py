"""`python -m engine train-classifier`: train the embedded proxy classifier (or a Tiny-ImageNet teacher for
SRe²L), resumably, and export it."""
from __future__ import annotations

import argparse
import shlex
import sys

from engine.classifiers.training import DATASET_DEFAULTS, DATASETS, TrainConfig, export, train

from .common import UserError, add_common, apply_threads, fail, resolve_device

HELP = ("Train the proxy classifier for the CAM distance, or SRe²L's Tiny-ImageNet teacher (resumes from --out; "
        "--export writes the asset)")


def _default(name: str) -> str:
    """'20 (tiny-imagenet 50)': the field's default and the datasets' own ones."""
    base = getattr(TrainConfig(), name)
    others = [f"{d} {v[name]}" for d, v in DATASET_DEFAULTS.items() if name in v]
    return f"{base}" + (f" ({', '.join(others)})" if others else "")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument("--dataset", choices=DATASETS, default=defaults.dataset)
    parser.add_argument("--data-root", default=None, help="folder holding the dataset files (default: the dataset's usual place)")
    parser.add_argument("--out", required=True, help="run folder: checkpoint after every epoch, resumed if present")
    # None: the dataset's default (DATASET_DEFAULTS), so only given values override it.
    parser.add_argument("--epochs", type=int, default=None, help=f"default {_default('epochs')}")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default {_default('batch_size')}")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"peak learning rate of the one-cycle schedule (default {_default('lr')})")
    parser.add_argument("--width", type=int, default=None,
                        help=f"channels of the first ResNet stage (default {_default('width')})")
    parser.add_argument("--export", default=None, help="write the final weights and figures here, e.g. "
                        "assets/fashion_mnist_classifier.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines only)")
    # Quick runs for tests and experiments only: the shipped asset uses the full splits.
    parser.add_argument("--train-subset", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--test-subset", type=int, default=None, help=argparse.SUPPRESS)
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    try:
        config = TrainConfig.for_dataset(args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                         width=args.width, seed=args.seed, train_subset=args.train_subset,
                                         test_subset=args.test_subset)
        result = train(config, args.out, resolve_device(args.device), progress=not args.no_progress,
                       data_root=args.data_root)
    except (UserError, ValueError) as err:
        return fail(str(err))
    last = result.state.history[-1]
    print(f"done: {result.state.epoch} epochs, test accuracy {last['test_accuracy']:.4f}, "
          f"{result.state.wall_time_s / 60:.1f} min")
    if args.export:
        command = "python -m engine " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train-classifier"] else ""
        figures = export(result, args.export, args.threads, command)
        print(f"exported {args.export}: test accuracy {figures['test_accuracy']:.4f} as stored "
              f"({figures['test_accuracy_fp32']:.4f} in float32), {figures['bytes'] / 1e6:.2f} MB, "
              f"sha256 {figures['sha256']}")
    return 0
