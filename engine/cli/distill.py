"""`python -m engine distill`: H-PD, GLaD or Pixel distillation into a run folder, resumable.

Under `torchrun --nproc-per-node N -m engine distill ...` every process runs this command; they share the
classes (engine/distributed.py) and rank 0 alone prints progress and writes the folder.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import MISSING, fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

from .. import distributed
from ..data import DatasetError
from ..run import Run, RunConfig, RunController, SpaceEndEvent, StepEvent
from ..run.config import field_help, same_config
from ..run.context import check_distributable
from ..run.limits import check_device
from .common import UserError, add_common, apply_threads, fail, resolve_device

HELP = "distil a dataset with H-PD, GLaD or Pixel into a run folder (resumable with --resume)"

COMMON = {"seed", "device"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--iterations", type=int, default=None,
                   help="for pixel and glad: the total steps (same as --steps-per-space / --glad-steps)")
    p.add_argument("--lr", type=float, default=None, help="alias of --lr-f")
    p.add_argument("--out", type=Path, help="run folder to create")
    p.add_argument("--resume", type=Path, default=None, help="continue the run in this folder from its last finished space")
    p.add_argument("--owner-id", default=None,
                   help="the owner id recorded in run.json (the studio passes its user's; leave it unset from a shell)")
    add_common(p)


def add_config_arguments(p: argparse.ArgumentParser, skip: set[str] = frozenset()) -> None:
    """One flag per RunConfig field (but COMMON and `skip`), its help from the field's metadata. Every flag
    defaults to None, so `given_config_values` passes on only what the user gave: a bool field defaulting
    to False is `--flag` (True when given), one defaulting to True is `--no-flag` (False when given)."""
    for f in fields(RunConfig):
        if f.name in COMMON or f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_ = field_help(f).replace("%", "%%")  # argparse %-formats help texts
        if f.type in ("bool", bool):
            if f.default is True:
                p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false", default=None,
                               help=help_)
            else:
                p.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_)
        else:
            p.add_argument(flag, type=_parser_type(f), default=None, help=help_)


def given_config_values(args: argparse.Namespace, skip: set[str] = frozenset()) -> dict:
    """The RunConfig fields the user gave on the command line (flags left at None were not given)."""
    given = {f.name: getattr(args, f.name) for f in fields(RunConfig) if f.name not in COMMON and f.name not in skip}
    return {k: v for k, v in given.items() if v is not None}


def _parser_type(f):
    default = f.default if f.default is not MISSING else None
    text = str(f.type)
    if "int" in text and "float" not in text:
        return int
    if "float" in text:
        return float
    return str if default is None or isinstance(default, str) else type(default)


def run(args: argparse.Namespace) -> int:
    dist = distributed.Distributed()
    first = int(os.environ.get("RANK", "0")) == 0  # before the group exists: torchrun's rank, else 0
    try:
        apply_threads(args.threads)
        config, run_dir = _config_and_dir(args)
        config = _one_gpu_each(config)
        check_device(config.device)  # cuda:7 on a one-GPU machine: refused before anything loads
        check_distributable(config, distributed.world_size())  # every process refuses alike, none waits
        if _already_done(run_dir, config, args.resume is not None):
            if first:
                print(f"{run_dir} already holds this finished run (same config); nothing to do.")
            return 0
        dist = distributed.from_env(distributed.process_device(torch.device(config.device)))
        run_ = Run(config, run_dir, dist=dist, owner=args.owner_id)
        finished = _drive(run_)
    except (ValueError, DatasetError, UserError) as exc:
        # Errors met before the processes part ways are every process's: rank 0 says it once.
        return fail(str(exc)) if first or dist.active else 2
    finally:
        dist.close()
    if not finished:
        return 1
    st = run_.state
    s = st.spaces[st.selected_space]
    if dist.writes:
        print(f"selected space {s.index} ({s.name}, {st.selection_reason}); wrote {run_dir}/synthetic.pt, images/, "
              f"grid.png, run.json")
    return 0


def _one_gpu_each(config: RunConfig) -> RunConfig:
    """Several CUDA processes take one GPU each (LOCAL_RANK, made the current device by from_env); the
    config says plain "cuda", the same in every process and in run.json (which a resume on any number of
    processes reads)."""
    if torch.device(config.device).type == "cuda" and distributed.world_size() > 1:
        return replace(config, device="cuda")
    return config


def _config_and_dir(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    if args.resume is not None:
        meta = args.resume / "run.json"
        if not meta.is_file():
            raise UserError(f"{args.resume} holds no run.json; it is not a run folder to resume.")
        return RunConfig(**json.loads(meta.read_text())["config"]), args.resume
    if args.out is None:
        raise UserError("give --out RUN_DIR for a new run, or --resume RUN_DIR to continue one.")
    # Every flag defaults to None (add_arguments): what is not None the user gave, including `--ipc 0`
    # (which must reach validation, not vanish) and `--no-distance` (False).
    values = given_config_values(args)
    if args.lr is not None:
        values["lr_f"] = args.lr
    if args.iterations is not None:
        method = values.get("method", "hpd")
        if method == "hpd":
            raise UserError("--iterations is for pixel and glad; H-PD takes --steps-per-space")
        values["glad_steps" if method == "glad" else "steps_per_space"] = args.iterations
    return RunConfig(**values, seed=args.seed, device=str(resolve_device(args.device))), args.out


def _already_done(run_dir: Path, config: RunConfig, resuming: bool) -> bool:
    """True if `run_dir` holds this very run, finished; raises if a new run would overwrite something."""
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return False
    meta = run_dir / "run.json"
    try:
        saved = json.loads(meta.read_text()) if meta.is_file() else None
    except json.JSONDecodeError:
        saved = None
    same = saved is not None and same_config(saved.get("config"), config)
    if same and saved.get("state") == "finished":
        return True
    if resuming or same:
        return False
    raise UserError(f"{run_dir} already exists and holds something else (a different run or other files); "
                    "choose another --out, delete that folder, or continue it with --resume.")


def _drive(run_: Run) -> bool:
    """Run to the end with a tqdm bar per space; True if it finished."""
    bars: dict[int, tqdm] = {}

    def on_event(event) -> None:
        if isinstance(event, StepEvent):
            bar = bars.get(event.space)
            if bar is None:
                name = run_.ctx.plan[event.space].name
                bar = bars[event.space] = tqdm(total=run_.ctx.steps_per_space, desc=f"space {event.space} {name}",
                                               unit="step", leave=False)
            bar.update(1)
            bar.set_postfix(loss=_fmt(event.loss), dist=_fmt(event.distance))
        elif isinstance(event, SpaceEndEvent):
            if event.space in bars:
                bars.pop(event.space).close()
            acc = "" if event.accuracy is None else f", held-out accuracy {100 * event.accuracy:.1f}%"
            tqdm.write(f"space {event.space}/{len(run_.ctx.plan) - 1} {run_.ctx.plan[event.space].name}: best step "
                       f"{event.best_step}, distance {_fmt(event.best_distance)}{acc}")

    run_.prepare()
    if run_.dist.writes:  # one progress bar, rank 0's
        run_.bus.subscribe(on_event)
    controller = RunController(run_)
    controller.start()
    controller.wait()
    for bar in bars.values():
        bar.close()
    if run_.status == "failed":
        raise UserError(f"the run failed: {_last_error(run_)}; it can continue from its last finished space "
                        f"with --resume {run_.run_dir}")
    return run_.status == "finished"


def _last_error(run_: Run) -> str:
    from ..run import read_events
    errors = [e for e in read_events(run_.run_dir / "events.jsonl") if e["kind"] == "error"]
    return errors[-1]["message"] if errors else "unknown error"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4g}"
