"""`python -m engine distill`: H-PD, GLaD or Pixel distillation into a run folder, resumable."""
from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, asdict, fields
from pathlib import Path

from tqdm import tqdm

from ..data import DatasetError
from ..run import Run, RunConfig, RunController, SpaceEndEvent, StepEvent
from .common import UserError, add_common, apply_threads, fail, resolve_device

HELP = "distil a dataset with H-PD, GLaD or Pixel into a run folder (resumable with --resume)"

# One line of help per RunConfig field; the flags themselves are derived from the dataclass.
FIELD_HELP = {
    "dataset": "dataset name (python -m engine datasets lists them)",
    "data_root": "folder holding the dataset files (default: the dataset's usual place)",
    "method": "hpd (layer by layer), glad (one fixed cut) or pixel (no GAN)",
    "objective": "dm, dc, dsa or tesla",
    "generator": "embedded:fashion-mnist or a StyleGAN-XL .pkl path (default: the dataset's embedded prior)",
    "classifier": "proxy classifier for the CAM distance (default: the dataset's; torchvision:resnet18[=path])",
    "ipc": "synthetic images per class",
    "steps_per_space": "optimisation steps per space (default: the paper's, DM 20, DC/DSA/TESLA 100)",
    "layers_per_space": "generator cuts per optimisation space (paper: 2)",
    "first_cut": "first generator cut H-PD optimises at",
    "last_cut": "last cut (default: the pixels)",
    "glad_cut": "GLaD's fixed cut (default: the middle one)",
    "glad_steps": "GLaD's steps (default: H-PD's total on the same generator)",
    "lr_w": "learning rate of the W+ latents (default: the generator's tuned rate, else the paper's)",
    "lr_f": "learning rate of the f-latents, or of the pixels for --method pixel",
    "lr_pixel": "learning rate of a GAN run's pixel space (default: the generator's tuned IPC 1 rate times the "
                "IPC, embedded DM 0.1, TESLA 100; else the Pixel method's, DM 1, DC/DSA 0.1, TESLA 1000)",
    "momentum": "SGD momentum of the latents",
    "f_clip": "clip f to [-f_clip, f_clip] at init and after each advance (default: the generator's own: StyleGAN-XL 10, embedded none)",
    "init": "avg (average-noise latents) or random for GAN methods (default: avg at IPC 1, random above: "
            "averaged latents make a class's images near-copies); real (default) or noise for pixel",
    "mean_ws_samples": "noises averaged per image by the average-noise initialisation",
    "selection": "distance (class-relevant CAM distance), loss or last (default: distance for hpd, else last)",
    "accuracy_pick": "evaluate every space on held-out training images and keep the best",
    "holdout_per_class": "training images per class held out for --accuracy-pick",
    "eval_model": "network of the per-space evaluation",
    "eval_repeats": "networks per per-space evaluation",
    "eval_epochs": "epochs of the per-space evaluation",
    "eval_protocol": "protocol of the per-space evaluation (glad or dc)",
    "distance_real_per_class": "real images per class for the distance's real side",
    "batch_real": "real images per class per matching step",
    "net": "matching network of the objective",
    "outer_loop": "DC/DSA updates per step (default by IPC: 1 or 10)",
    "inner_loop": "DC/DSA network epochs between updates (default by IPC: 1 or 50)",
    "buffers": "expert trajectory folder for TESLA (python -m engine buffers)",
    "syn_steps": "TESLA: student steps on the synthetic images per match",
    "expert_epochs": "TESLA: expert epochs the student steps are matched against",
    "max_start_epoch": "TESLA: start epochs are drawn from [0, max_start_epoch); needs trajectories of at least max_start_epoch + expert_epochs - 1 epochs",
    "sg_batch": "generator gradient: auto (by a memory estimate), single (one pass) or chunked (two passes)",
    "sg_chunk": "images per chunk of the chunked scheme",
    "preview_every": "render preview images every N steps",
}
COMMON = {"seed", "device"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    for f in fields(RunConfig):
        if f.name in COMMON:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", help=FIELD_HELP[f.name])
        else:
            p.add_argument(flag, type=_parser_type(f), default=None, help=FIELD_HELP[f.name])
    p.add_argument("--iterations", type=int, default=None,
                   help="for pixel and glad: the total steps (same as --steps-per-space / --glad-steps)")
    p.add_argument("--lr", type=float, default=None, help="alias of --lr-f")
    p.add_argument("--out", type=Path, help="run folder to create")
    p.add_argument("--resume", type=Path, default=None, help="continue the run in this folder from its last finished space")
    add_common(p)


def _parser_type(f):
    default = f.default if f.default is not MISSING else None
    text = str(f.type)
    if "int" in text and "float" not in text:
        return int
    if "float" in text:
        return float
    return str if default is None or isinstance(default, str) else type(default)


def run(args: argparse.Namespace) -> int:
    try:
        apply_threads(args.threads)
        config, run_dir = _config_and_dir(args)
        if _already_done(run_dir, config, args.resume is not None):
            print(f"{run_dir} already holds this finished run (same config); nothing to do.")
            return 0
        run_ = Run(config, run_dir)
        finished = _drive(run_)
    except (ValueError, DatasetError, UserError) as exc:
        return fail(str(exc))
    if not finished:
        return 1
    s = run_.spaces[run_.selected_space]
    print(f"selected space {s.index} ({s.name}, {run_.selection_reason}); wrote {run_dir}/synthetic.pt, images/, "
          f"grid.png, run.json")
    return 0


def _config_and_dir(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    if args.resume is not None:
        meta = args.resume / "run.json"
        if not meta.is_file():
            raise UserError(f"{args.resume} holds no run.json; it is not a run folder to resume.")
        return RunConfig(**json.loads(meta.read_text())["config"]), args.resume
    if args.out is None:
        raise UserError("give --out RUN_DIR for a new run, or --resume RUN_DIR to continue one.")
    # `is`, not `in`: 0 == False, and an explicit `--ipc 0` must reach validation, not vanish.
    given = {f.name: getattr(args, f.name) for f in fields(RunConfig) if f.name not in COMMON}
    values = {k: v for k, v in given.items() if v is not None and v is not False}
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
    same = saved is not None and saved.get("config") == json.loads(json.dumps(asdict(config)))
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
                name = run_.spaces[event.space].name
                bar = bars[event.space] = tqdm(total=run_.steps_per_space, desc=f"space {event.space} {name}",
                                               unit="step", leave=False)
            bar.update(1)
            bar.set_postfix(loss=_fmt(event.loss), dist=_fmt(event.distance))
        elif isinstance(event, SpaceEndEvent):
            if event.space in bars:
                bars.pop(event.space).close()
            acc = "" if event.accuracy is None else f", held-out accuracy {100 * event.accuracy:.1f}%"
            tqdm.write(f"space {event.space}/{len(run_.spaces) - 1} {run_.spaces[event.space].name}: best step "
                       f"{event.best_step}, distance {_fmt(event.best_distance)}{acc}")

    run_.prepare()
    run_.bus.subscribe(on_event)
    controller = RunController(run_)
    controller.start()
    controller.wait()
    for bar in bars.values():
        bar.close()
    if run_.state == "failed":
        raise UserError(f"the run failed: {_last_error(run_)}; it can continue from its last finished space "
                        f"with --resume {run_.run_dir}")
    return run_.state == "finished"


def _last_error(run_: Run) -> str:
    from ..run import read_events
    errors = [e for e in read_events(run_.run_dir / "events.jsonl") if e["kind"] == "error"]
    return errors[-1]["message"] if errors else "unknown error"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4g}"
