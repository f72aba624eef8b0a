"""Arguments and error handling shared by every command."""
from __future__ import annotations

import argparse
import sys

import torch


def add_common(parser: argparse.ArgumentParser, seed_help: str = "random seed (same seed, same device: same result)",
               seed_default: int | None = 0) -> None:
    parser.add_argument("--seed", type=int, default=seed_default, help=seed_help)
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for but CUDA is not available here; use --device cpu.")
    return device


def apply_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


class UserError(Exception):
    """A problem with the user's input; printed as one sentence, exit code 2."""


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code
