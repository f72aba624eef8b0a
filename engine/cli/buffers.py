"""`python -m engine buffers`: train MTT/TESLA expert trajectories, resumably, one file per expert.

Under `torchrun --nproc-per-node N -m engine buffers ...` the processes share the missing experts (each
writes its own experts' files); rank 0 alone shows the bar, prints and writes the manifest."""
from __future__ import annotations

import argparse
import os

from .. import distributed
from ..buffers import BufferConfig, train_buffers
from ..data import DatasetError, list_datasets
from .common import UserError, add_common, apply_threads, fail, resolve_device

HELP = "train expert trajectories for TESLA (resumes in --out: finished experts are kept)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = BufferConfig()
    p.add_argument("--dataset", default=defaults.dataset, help=f"one of: {', '.join(list_datasets())}")
    p.add_argument("--data-root", default=None, help="folder holding the dataset files (default: the dataset's usual place)")
    p.add_argument("--experts", type=int, required=True, help="number of experts (paper: 100 CIFAR-10, 200 ImageNet)")
    p.add_argument("--epochs", type=int, required=True, help="epochs per expert (paper: 50 CIFAR-10, 15 ImageNet)")
    p.add_argument("--out", required=True, help="buffer folder: manifest.json and expert_0000.pt, ...")
    p.add_argument("--lr", type=float, default=defaults.lr, help="SGD learning rate (no momentum, no weight decay)")
    p.add_argument("--batch", type=int, default=defaults.batch, help="real images per SGD step")
    p.add_argument("--depth", type=int, default=None, help="ConvNet depth (default: 3 at 32 px, 5 at 128 px); "
                   "must match the distillation student")
    p.add_argument("--width", type=int, default=defaults.width, help="ConvNet width; must match the student")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per expert only)")
    add_common(p)


def run(args: argparse.Namespace) -> int:
    dist = distributed.Distributed()
    first = int(os.environ.get("RANK", "0")) == 0  # before the group exists: torchrun's rank, else 0
    try:
        apply_threads(args.threads)
        config = BufferConfig(dataset=args.dataset, experts=args.experts, epochs=args.epochs, lr=args.lr,
                              batch=args.batch, seed=args.seed, depth=args.depth, width=args.width,
                              data_root=args.data_root)
        device = distributed.process_device(resolve_device(args.device))
        dist = distributed.from_env(device)
        summary = train_buffers(config, args.out, device, progress=not args.no_progress, dist=dist)
    except (ValueError, DatasetError, UserError) as exc:
        return fail(str(exc)) if first or dist.active else 2
    finally:
        dist.close()
    if not dist.writes:
        return 0
    accuracies = [summary.manifest.test_accuracy[i] for i in summary.manifest.finished]
    print(f"{len(accuracies)} experts in {summary.folder} ({len(summary.trained)} trained now); "
          f"mean test accuracy {sum(accuracies) / len(accuracies):.4f}")
    return 0

