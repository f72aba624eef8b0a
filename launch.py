"""Start H-PD Studio: `python launch.py [--host 127.0.0.1] [--port 7860] [--share] [--runs-dir runs]`."""
from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="H-PD Studio: watch, steer, compare and export distillation runs")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--runs-dir", default="runs", help="where runs are written and run folders are browsed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import engine  # after argparse: --help stays instant
    from hpd_app import build_app, launch_app

    engine.tune_allocator()
    demo = build_app(args.runs_dir)
    _, url, share_url = launch_app(demo, args.runs_dir, host=args.host, port=args.port, share=args.share,
                                   prevent_thread_lock=True, quiet=True)
    print(f"H-PD Studio at {url}" + (f" (public: {share_url})" if share_url else ""), flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
