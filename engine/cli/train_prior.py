"""`python -m engine train-prior`: train the embedded conditional GAN prior, resumably."""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.data import load_dataset
from engine.prior import TrainConfig, train_prior

from .common import add_common, apply_threads, fail, resolve_device

HELP = "Train the embedded conditional style GAN prior (resumes from --out if it holds a checkpoint)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="fashion-mnist", help="training set (default fashion-mnist)")
    parser.add_argument("--data-root", default=None, help="dataset folder (default: the dataset's standard place)")
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoint, sample grids, stats.jsonl")
    parser.add_argument("--kimg", type=float, default=200.0, help="train until this many thousand images")
    parser.add_argument("--batch", type=int, default=64, help="batch size (even)")
    parser.add_argument("--ckpt-kimg", type=float, default=4.0, help="checkpoint and sample grid period (kimg)")
    parser.add_argument("--r1-gamma", type=float, default=0.1, help="R1 weight")
    parser.add_argument("--ms-weight", type=float, default=1.0, help="mode-seeking weight (0 turns it off)")
    parser.add_argument("--ac-weight", type=float, default=0.5, help="auxiliary class loss weight")
    parser.add_argument("--anneal-kimg", type=float, default=0.0,
                        help="over the last this many kimg, decay both learning rates to zero on a half cosine "
                             "(default 0: constant rates); may be added when resuming")
    parser.add_argument("--projected-weight", type=float, default=0.0,
                        help="weight of a second discriminator on the frozen proxy classifier's features "
                             "(Projected GAN's idea; default 0: off); may be switched on when resuming")
    parser.add_argument("--export", type=Path, default=None, help="write the EMA generator here when done")
    parser.add_argument("--state-file", type=Path, default=None,
                        help="also keep the training state in this one file (overwritten at every checkpoint; "
                             "commit it: a run whose --out folder is lost continues from it, on any machine)")
    parser.add_argument("--resume", action="store_true",
                        help="insist on resuming (fail if --out has no checkpoint); resuming is automatic anyway")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (progress lines still print)")
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    device = resolve_device(args.device)
    if args.resume and not (args.out / "checkpoint.pt").is_file() and not (args.state_file and args.state_file.is_file()):
        return fail(f"--resume was given but neither {args.out / 'checkpoint.pt'} nor a --state-file exists")
    try:
        cfg = TrainConfig(dataset=args.dataset, kimg=args.kimg, batch=args.batch, seed=args.seed,
                          ckpt_kimg=args.ckpt_kimg, r1_gamma=args.r1_gamma, ms_weight=args.ms_weight,
                          ac_weight=args.ac_weight, anneal_kimg=args.anneal_kimg,
                          projected_weight=args.projected_weight)
    except ValueError as e:  # the settings, before any data is read
        return fail(f"{e} (check the train-prior options)")
    data = load_dataset(args.dataset, "train", root=args.data_root)
    try:
        result = train_prior(cfg, data.images, data.labels, data.info.class_names, args.out, device,
                             export=args.export, progress=not args.no_progress, log=lambda s: print(s, flush=True),
                             state_file=args.state_file)
    except ValueError as e:
        return fail(str(e))
    print(f"done: {result.steps} steps, {result.images_seen / 1000:.1f} kimg, "
          f"{result.train_seconds / 60:.1f} min of training; checkpoint {result.checkpoint}")
    return 0
