"""`python -m engine evaluate`: train fresh networks on a run's synthetic set, test on real data."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import DatasetError, load_dataset
from ..evaluate import PROTOCOLS, evaluate_synset, get_protocol, summary
from ..export import write_json
from ..nets import list_networks
from ..provenance import provenance
from .common import UserError, add_common, apply_threads, fail, resolve_device

HELP = "train fresh networks on a run's synthetic set and test them on the real test split (writes eval.json)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a run folder holding synthetic.pt and run.json")
    p.add_argument("--model", default="convnet", help=f"one of: {', '.join(list_networks())}")
    p.add_argument("--repeats", type=int, default=5, help="networks to train (mean ± std over them)")
    p.add_argument("--protocol", default="glad", help=f"training recipe: {', '.join(PROTOCOLS)} (see README)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the protocol's, 1000)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: the one the run used)")
    add_common(p)


def run(args: argparse.Namespace) -> int:
    try:
        apply_threads(args.threads)
        device = resolve_device(args.device)
        protocol = get_protocol(args.protocol, args.epochs)
        if args.model not in list_networks():
            raise UserError(f"unknown model {args.model!r}; choose one of: {', '.join(list_networks())}")
        synthetic, config = _read_run(args.run_dir)
        test = load_dataset(config["dataset"], "test", args.data_root or config.get("data_root"))
        with tqdm(total=args.repeats * protocol.epochs, desc=f"evaluate {args.model}", unit="ep") as bar:
            result = evaluate_synset(synthetic["images"], synthetic["labels"], test, args.model, protocol,
                                     args.repeats, args.seed, device, lambda done, total: bar.update(done - bar.n))
    except (ValueError, DatasetError, UserError) as exc:
        return fail(str(exc))
    write_json(args.run_dir / "eval.json", result.to_json() | {"dataset": config["dataset"], "split": "test",
                                                                "provenance": provenance(device)})
    print(summary(result))
    print(f"wrote {args.run_dir / 'eval.json'}")
    return 0


def _read_run(run_dir: Path) -> tuple[dict, dict]:
    pt, meta = run_dir / "synthetic.pt", run_dir / "run.json"
    if not pt.is_file() or not meta.is_file():
        raise UserError(f"{run_dir} is not a run folder (it needs synthetic.pt and run.json); "
                        "create one with `python -m engine distill --out ...`.")
    try:
        synthetic = torch.load(pt, map_location="cpu", weights_only=True)
        config = json.loads(meta.read_text())["config"]
    except (RuntimeError, OSError, EOFError, KeyError, json.JSONDecodeError) as exc:
        raise UserError(f"{run_dir} holds an unreadable synthetic.pt or run.json ({exc}).") from exc
    if not {"images", "labels"} <= set(synthetic):
        raise UserError(f"{pt} lacks the `images` and `labels` tensors.")
    return synthetic, config
