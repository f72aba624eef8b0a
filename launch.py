"""Start H-PD Studio.

Until the Gradio studio lands (issue 6), this prints what the engine can do here and runs a short
headless demo: Pixel DM on the embedded Fashion-MNIST into runs/launch-demo, then evaluates it.
"""
from __future__ import annotations

import argparse
import sys

from engine.cli import main as engine_main
from engine.data import DATASETS, DatasetError, load_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="H-PD Studio (headless preview until the studio lands)")
    p.add_argument("--runs-dir", default="runs", help="where runs are written")
    p.add_argument("--iterations", type=int, default=20, help="iterations of the demo run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("H-PD Studio engine. Datasets:")
    for name in DATASETS:
        print(f"  {name}")
    try:
        load_dataset("fashion-mnist", "test")
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = f"{args.runs_dir}/launch-demo"
    print(f"Demo: Pixel DM, IPC 1, {args.iterations} iterations -> {out}")
    code = engine_main(["distill", "--iterations", str(args.iterations), "--out", out])
    if code == 0:
        code = engine_main(["evaluate", out, "--repeats", "1", "--epochs", "300", "--protocol", "dc"])
    print("Next: `python -m engine --help` lists every command.")
    return code


if __name__ == "__main__":
    sys.exit(main())
