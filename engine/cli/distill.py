"""`python -m engine distill`: distil a dataset into a few synthetic images per class."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from .. import objectives
from ..data import DatasetError, list_datasets
from ..distill import INITS, METHODS, DistillConfig, distill_pixels, save_run
from ..nets import list_networks
from .common import UserError, add_common, apply_threads, fail, resolve_device

HELP = "distil a dataset into IPC synthetic images per class (writes synthetic.pt, PNGs, run.json)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion-mnist", help=f"one of: {', '.join(list_datasets())}")
    p.add_argument("--data-root", default=None, help="folder holding the dataset files (default: the dataset's usual place)")
    p.add_argument("--method", default="pixel", help=f"parameterisation: {', '.join(METHODS)}")
    p.add_argument("--objective", default="dm", help=f"one of: {', '.join(objectives.OBJECTIVES)}")
    p.add_argument("--ipc", type=int, default=1, help="synthetic images per class")
    p.add_argument("--iterations", type=int, default=200, help="distillation iterations")
    p.add_argument("--lr", type=float, default=None, help="learning rate of the synthetic pixels (default: DM 1.0, DC/DSA 0.1)")
    p.add_argument("--momentum", type=float, default=0.5, help="SGD momentum of the synthetic pixels")
    p.add_argument("--init", default="real", help=f"initial images: {', '.join(INITS)}")
    p.add_argument("--batch-real", type=int, default=256, help="real images per class per matching step")
    p.add_argument("--outer-loop", type=int, default=None, help="DC/DSA updates per iteration (default by IPC: 1 or 10)")
    p.add_argument("--inner-loop", type=int, default=None, help="DC/DSA network epochs between updates (default by IPC: 1 or 50)")
    p.add_argument("--lr-net", type=float, default=0.01, help="DC/DSA learning rate of the matching network")
    p.add_argument("--net", default="convnet", help=f"matching network: {', '.join(list_networks())}")
    p.add_argument("--out", required=True, type=Path, help="run folder to create")
    add_common(p)


def run(args: argparse.Namespace) -> int:
    try:
        apply_threads(args.threads)
        config = _config(args)
        if _already_done(args.out, config):
            print(f"{args.out} already holds this run (same config); nothing to do.")
            return 0
        start = time.perf_counter()
        with tqdm(total=config.iterations, desc=f"{config.method}/{config.objective} ipc {config.ipc}", unit="it") as bar:
            def progress(it: int, loss: float) -> None:
                bar.set_postfix(loss=f"{loss:.4g}")
                bar.update(1)
            result = distill_pixels(config, progress)
        save_run(args.out, config, result, time.perf_counter() - start)
    except (ValueError, DatasetError, UserError) as exc:
        return fail(str(exc))
    print(f"wrote {args.out}/synthetic.pt ({len(result.labels)} images), images/, grid.png, run.json; "
          f"final loss {result.losses[-1]:.4g}")
    return 0


def _config(args: argparse.Namespace) -> DistillConfig:
    return DistillConfig(
        dataset=args.dataset, data_root=args.data_root, method=args.method, objective=args.objective,
        ipc=args.ipc, iterations=args.iterations, lr=args.lr, momentum=args.momentum, init=args.init,
        batch_real=args.batch_real, outer_loop=args.outer_loop, inner_loop=args.inner_loop,
        lr_net=args.lr_net, net=args.net, seed=args.seed, device=str(resolve_device(args.device)))


def _already_done(out: Path, config: DistillConfig) -> bool:
    """True if `out` holds this very run; raises if it holds anything else."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    run_json = out / "run.json"
    if out.is_dir() and run_json.is_file():
        try:
            if json.loads(run_json.read_text()).get("config") == json.loads(json.dumps(asdict(config))):
                return True
        except json.JSONDecodeError:
            pass
    raise UserError(f"{out} already exists and holds something else (a different run or other files); "
                    "choose another --out or delete that folder.")
