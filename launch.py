"""Start H-PD Studio: `python launch.py [--host 127.0.0.1] [--port 7860] [--share] [--runs-dir runs]`
plus the limits of a shared server (README, "Running it for a team")."""
from __future__ import annotations

import argparse
import sys


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="H-PD Studio: watch, steer, compare and export distillation runs")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--runs-dir", default="runs", help="where runs are written and run folders are browsed")
    limits = p.add_argument_group("limits of a shared server")
    limits.add_argument("--max-runs-per-user", type=_positive(int), default=4,
                        help="queued, running and paused runs one user may hold at once (default 4)")
    limits.add_argument("--max-queued", type=_positive(int), default=32,
                        help="runs waiting for a device, all users together (default 32)")
    limits.add_argument("--max-folders-per-user", type=_positive(int), default=16,
                        help="run folders one user keeps open; the least recently seen is closed first (default 16)")
    limits.add_argument("--pause-release-min", type=_positive(float), default=10.0,
                        help="a run paused this many minutes while others wait gives its device back; Resume "
                             "queues it again (default 10)")
    limits.add_argument("--idle-release-min", type=_positive(float), default=10.0,
                        help="a finished run nobody looked at for this many minutes leaves the server's memory "
                             "(its folder stays; default 10)")
    limits.add_argument("--max-upload-mb", type=_positive(float), default=1.0,
                        help="largest file Gradio's upload route accepts (default 1; the page uploads nothing)")
    ev = p.add_argument_group("the page's evaluation suite (Evaluate, and Compare's verdict)")
    ev.add_argument("--eval-repeats", type=_positive(int), default=2,
                    help="networks trained per model (default 2; `python -m engine evaluate` trains 5)")
    ev.add_argument("--eval-epochs", type=_positive(int), default=300,
                    help="training epochs per network (default 300, as RESULTS.md; the glad protocol's own: 1000)")
    ev.add_argument("--eval-models", default="",
                    help="comma-separated models (default: every one that takes the dataset's resolution)")
    return p.parse_args(argv)


def limits_from(args: argparse.Namespace):
    from hpd_app.jobs import ServerLimits
    return ServerLimits(runs_per_owner=args.max_runs_per_user, queued=args.max_queued,
                        folders_per_owner=args.max_folders_per_user, pause_release_s=60 * args.pause_release_min,
                        idle_release_s=60 * args.idle_release_min)


def evaluation_from(args: argparse.Namespace):
    from hpd_app.evaluation import EvalSettings
    models = tuple(m.strip() for m in args.eval_models.split(",") if m.strip())
    return EvalSettings(models=models, repeats=args.eval_repeats, epochs=args.eval_epochs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import engine  # after argparse: --help stays instant
    from hpd_app import build_app, launch_app

    try:
        evaluation = evaluation_from(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine.tune_allocator()
    demo = build_app(args.runs_dir, limits=limits_from(args), evaluation=evaluation)
    _, url, share_url = launch_app(demo, args.runs_dir, host=args.host, port=args.port, share=args.share,
                                   prevent_thread_lock=True, quiet=True,
                                   max_file_size=int(args.max_upload_mb * 1_000_000))
    print(f"H-PD Studio at {url}" + (f" (public: {share_url})" if share_url else ""), flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
