"""The `python -m engine` command line: one module per command, each with `add_parser` and `run`."""
from __future__ import annotations

import argparse
import importlib
import sys

from ..runtime import tune_allocator

# Command name -> module under engine.cli; each module defines HELP, add_arguments(parser), run(args) -> int.
COMMANDS = {
    "distill": "distill",
    "evaluate": "evaluate",
    "compare": "compare",
    "datasets": "datasets",
    "train-classifier": "train_classifier",
    "train-prior": "train_prior",
    "buffers": "buffers",
    "export": "export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="H-PD Studio engine: distil datasets in pixel space or inside a GAN, headless.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"engine.cli.{module_name}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_allocator()
    try:
        return args._run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
