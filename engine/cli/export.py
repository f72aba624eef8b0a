"""`python -m engine export`: write a finished space's synthetic set as the run's export."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data import dataset_info
from ..run.export import export_files, read_space_file
from .common import UserError, fail

HELP = "export one optimisation space's selected set of a run (synthetic.pt, images/, grid.png, export.json)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a run folder made by `distill`")
    p.add_argument("--layer", type=int, default=None,
                   help="optimisation space to export (default: the run's selected one)")


def run(args: argparse.Namespace) -> int:
    try:
        meta = args.run_dir / "run.json"
        if not meta.is_file():
            raise UserError(f"{args.run_dir} holds no run.json; it is not a run folder.")
        summary = json.loads(meta.read_text())
        space = args.layer if args.layer is not None else summary.get("selected_space")
        if space is None:
            raise UserError(f"{args.run_dir} has no selected space yet; pass --layer K (a finished space).")
        saved = read_space_file(args.run_dir, space)
        info = dataset_info(summary["config"]["dataset"])
        path = export_files(args.run_dir, saved, info, summary | {"exported_space": space})
    except (ValueError, UserError, KeyError) as exc:
        return fail(str(exc))
    print(f"exported space {space} (cut {saved['layer']}) to {path}")
    return 0
