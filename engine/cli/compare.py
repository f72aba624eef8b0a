"""`python -m engine compare`: a paired multi-seed grid of methods, each cell distilled and evaluated by the
suite; writes compare.json and compare.md (resumable cell by cell; see engine/compare.py).

Under `torchrun --nproc-per-node N -m engine compare ...` every cell is distilled class-sharded and
evaluated with its networks shared over the processes; rank 0 alone prints and writes."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import distributed
from ..data import DatasetError, dataset_info
from .common import UserError, apply_threads, fail, resolve_device
from .distill import add_config_arguments, given_config_values
from .evaluate import Bars, add_suite_arguments, split_list, suite_spec

HELP = ("run a paired grid (methods x selections x seeds) of distillations, evaluate each with the suite, and "
        "write compare.json and compare.md with paired differences and their t-intervals (resumable)")

SKIP = {"method", "selection", "seed", "glad_cut"}  # set per cell by the flags below


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", default="pixel,glad,hpd",
                   help="comma-separated methods; `method:basis` fixes an arm's selection basis (e.g. glad:distance)")
    p.add_argument("--selections", default=None,
                   help="comma-separated selection bases for H-PD, one arm each (default: H-PD's, distance)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; arms at one seed are paired")
    p.add_argument("--glad-cut", type=int, default=None, help="GLaD's fixed cut (default: the generator's middle one)")
    p.add_argument("--glad-cuts", default=None,
                   help="comma-separated cuts: one GLaD cell per cut and seed, the best by held-out accuracy per "
                        "seed kept (needs --accuracy-pick)")
    p.add_argument("--pixel-steps", type=int, default=None,
                   help="Pixel's steps (default: H-PD's total on the generator, the budget GLaD gets too)")
    p.add_argument("--out", type=Path, required=True, help="folder of the grid: one run folder per cell")
    p.add_argument("--report-only", action="store_true",
                   help="write compare.json and compare.md from the cells already in --out; run nothing")
    add_suite_arguments(p)
    add_config_arguments(p, SKIP)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def _ints(text: str | None, flag: str) -> list[int] | None:
    items = split_list(text, flag)
    if items is None:
        return None
    try:
        return [int(x) for x in items]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated whole numbers, got {text!r}.") from None


def run(args: argparse.Namespace) -> int:
    from ..compare import CompareSpec, parse_arms, report_grid, run_compare
    from ..run import RunConfig
    from ..run.context import check_distributable
    dist = distributed.Distributed()
    first = int(os.environ.get("RANK", "0")) == 0  # before the group exists: torchrun's rank, else 0
    try:
        apply_threads(args.threads)
        device = resolve_device(args.device)
        seeds = _ints(args.seeds, "--seeds")
        glad_cuts = _ints(args.glad_cuts, "--glad-cuts")
        if args.glad_cut is not None and glad_cuts:
            raise UserError("give --glad-cut (one cut) or --glad-cuts (a sweep), not both.")
        # Several CUDA processes take one GPU each: the cells' configs say plain "cuda" (as `distill` does).
        several = distributed.world_size() > 1
        base = given_config_values(args, SKIP) | {"device": "cuda" if several and device.type == "cuda" else str(device)}
        if args.glad_cut is not None:
            base["glad_cut"] = args.glad_cut
        config = RunConfig(**base)  # bad run settings fail here, before any work
        info = dataset_info(config.dataset)
        arms = parse_arms(split_list(args.methods, "--methods"), split_list(args.selections, "--selections"),
                          glad_cuts)
        suite = suite_spec(args, info.resolution, config.net)
        spec = CompareSpec(base, arms, tuple(seeds), suite, args.pixel_steps)
        if args.report_only:
            if several:
                raise UserError("--report-only only reads the grid's folders and writes two files; run it "
                                "without torchrun.")
            report = report_grid(spec, args.out)
            print(f"{sum(c['evaluated'] for c in report['cells'])} cells evaluated so far; wrote "
                  f"{args.out / 'compare.json'} and {args.out / 'compare.md'}")
            return 0
        check_distributable(config, distributed.world_size())  # every cell's objective: refused by all alike
        device = distributed.process_device(device)
        dist = distributed.from_env(device)
        bars = Bars()
        try:
            report = run_compare(spec, args.out, device=str(device), cache=args.cache, progress=bars.update,
                                 log=lambda line: (bars.close(), print(line, flush=True)), dist=dist)
        finally:
            bars.close()
    except (ValueError, DatasetError, UserError) as exc:
        return fail(str(exc)) if first or dist.active else 2
    finally:
        dist.close()
    if not dist.writes:
        return 0
    evaluated = sum(c["evaluated"] for c in report["cells"])
    print(f"{evaluated} cells evaluated; wrote {args.out / 'compare.json'} and {args.out / 'compare.md'}")
    return 0
