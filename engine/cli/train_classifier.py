"""`python -m engine train-classifier`: train the embedded proxy classifier, resumably, and export it."""
from __future__ import annotations

import argparse
import shlex
import sys

from engine.classifiers.training import DATASETS, TrainConfig, export, train

from .common import UserError, add_common, apply_threads, fail, resolve_device

HELP = "Train the proxy classifier for the CAM distance (resumes from --out; --export writes the asset)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument("--dataset", choices=DATASETS, default=defaults.dataset)
    parser.add_argument("--out", required=True, help="run folder: checkpoint after every epoch, resumed if present")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--width", type=int, default=defaults.width, help="channels of the first ResNet stage")
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
        config = TrainConfig(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             width=args.width, seed=args.seed, train_subset=args.train_subset,
                             test_subset=args.test_subset)
        result = train(config, args.out, resolve_device(args.device), progress=not args.no_progress)
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
