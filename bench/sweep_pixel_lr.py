"""The pixel space of a GAN run: which pixel learning rate, starting from the generator's images?

H-PD's last space optimises pixels that start as the prior's images, not as real ones (the Pixel method's
start, for which its rate was set). This runs that space alone (H-PD from the pixel cut, average-noise
latents, selection: last, so no distance) per rate and scores the set on the held-out split (never the test split):

    python bench/sweep_pixel_lr.py --objective dm --steps 20 --rates 1 0.3 0.1 --threads 1
    python bench/sweep_pixel_lr.py --objective tesla --buffers runs/buffers/fashion-mnist --rates 1000 100 10

`--start real` runs the Pixel method instead (real images, its rate is lr_f), for the same care on the
baseline's side. Results: bench/results/sweep_pixel_lr_<objective>.json, keyed by rate ("real:<rate>" for
the Pixel method); finished ones are skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.generators import load_generator  # noqa: E402
from engine.run import Run, RunConfig  # noqa: E402
from engine.runtime import tune_allocator  # noqa: E402


def run_rate(args: argparse.Namespace, rate: float, pixel_cut: int) -> dict:
    if args.start == "gan":
        start = {"method": "hpd", "first_cut": pixel_cut, "lr_pixel": rate}
    else:
        start = {"method": "pixel", "lr_f": rate}
    config = RunConfig(**start, objective=args.objective, ipc=args.ipc,
                       steps_per_space=args.steps, selection="last", accuracy_pick=True,
                       eval_repeats=args.eval_repeats, eval_epochs=args.eval_epochs, preview_every=10_000,
                       buffers=args.buffers, expert_epochs=args.expert_epochs,
                       max_start_epoch=args.max_start_epoch, seed=args.seed)
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(config, Path(tmp) / "run")
        while run.step():
            pass
    (space,) = run.state.spaces
    return {"lr_pixel": rate, "heldout_accuracy": space.accuracy, "losses": space.losses,
            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "threads": torch.get_num_threads(), "load": os.getloadavg()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--objective", default="dm")
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rates", type=float, nargs="+", required=True)
    p.add_argument("--start", choices=("gan", "real"), default="gan", help="the prior's images (H-PD's pixel "
                   "space) or real ones (the Pixel method)")
    p.add_argument("--eval-epochs", type=int, default=300)
    p.add_argument("--buffers", default=None, help="TESLA: expert trajectories (python -m engine buffers)")
    p.add_argument("--expert-epochs", type=int, default=2, help="TESLA (short CPU trajectories)")
    p.add_argument("--max-start-epoch", type=int, default=2, help="TESLA")
    p.add_argument("--eval-repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tune_allocator()
    out = Path(f"bench/results/sweep_pixel_lr_{args.objective}.json")
    pixel_cut = load_generator(RunConfig(objective=args.objective, buffers=args.buffers).generator_spec).pixel_cut
    for rate in args.rates:
        key = str(rate) if args.start == "gan" else f"real:{rate}"
        done = json.loads(out.read_text()) if out.exists() else {}
        if key in done:
            continue
        result = run_rate(args, rate, pixel_cut)
        done = json.loads(out.read_text()) if out.exists() else {}
        done[key] = result
        out.write_text(json.dumps(done, indent=1))
        loss = [x for x in result["losses"] if x is not None]  # the kept latent's own loss is not measured
        print(f"{args.start} start, lr {rate}: held-out {100 * result['heldout_accuracy']:.1f}%, loss {loss[0]:.4g} -> "
              f"max {max(loss):.4g} -> {loss[-1]:.4g}, {result['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
