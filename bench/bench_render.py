"""The studio's CAM grid, side by side (issue 18): what one "Show CAM" picture of the preview costs.

A picture is three parts, timed apart: the heatmaps (grad-cam's LayerCAM on the shipped proxy, the page's
`CamProvider` path), the colour overlay, and the class-labelled grid (`hpd_app.render.grid`). The heatmaps
are measured two ways on the same real Fashion-MNIST test images (the first `ipc` of every class):

- `input-grad`: the implementation before session 15, the input requiring grad, so the backward runs down
  through every convolution of the proxy to a gradient nobody reads;
- `leaf`: `engine.cam.cam_heatmaps` as the page runs it, the backward stopped at the CAM layer.

Their largest difference is printed (the same arithmetic above the CAM layer: it should be rounding at
most). bf16 autocast is not a variant: grad-cam hands the CAM layer's activations to numpy, which has no
bf16, so it would need its own LayerCAM.

Every round runs every variant once, rotating which goes first; medians over rounds. The thread count and
the load before and after are printed and written.

    OMP_NUM_THREADS=1 python bench/bench_render.py --threads 1 --rounds 7 --json bench/results/render.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytorch_grad_cam import LayerCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from engine import cam_heatmaps, dataset_info, load_classifier, overlay  # noqa: E402
from engine.data import load_dataset  # noqa: E402
from hpd_app import render  # noqa: E402


def input_grad_heatmaps(proxy, images_pm1, labels) -> np.ndarray:
    """LayerCAM with the input requiring grad: what `cam_heatmaps` did before the CAM-layer leaf."""
    x = images_pm1.detach().float().requires_grad_(True)
    with LayerCAM(model=proxy, target_layers=[proxy.cam_layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in labels])
    proxy.zero_grad(set_to_none=True)
    return maps


VARIANTS = {"input-grad": input_grad_heatmaps, "leaf": cam_heatmaps}


def first_per_class(info, ipc: int):
    """The first `ipc` test images of every class, normalised and class-major as a distilled set is."""
    test = load_dataset("fashion-mnist", "test")
    idx = torch.cat([torch.nonzero(test.labels == c).flatten()[:ipc] for c in range(10)])
    return info.normalize(test.images[idx].float() / 255), test.labels[idx]


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def measure(proxy, info, ipc: int, rounds: int) -> dict:
    images, labels = first_per_class(info, ipc)
    pm1 = info.to_generator(images)
    reference = cam_heatmaps(proxy, pm1, labels)
    for fn in VARIANTS.values():  # one warm call each: first-call allocation and oneDNN primitive set-up
        fn(proxy, pm1, labels)
    times = {name: [] for name in VARIANTS} | {"overlay": [], "grid": []}
    diffs = {}
    names = list(VARIANTS)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            maps, s = timed(VARIANTS[name], proxy, pm1, labels)
            times[name].append(s)
            diffs[name] = max(diffs.get(name, 0.0), float(np.abs(maps - reference).max()))
        rgb, s = timed(overlay, info.denormalize(images).clamp(0, 1), reference)
        times["overlay"].append(s)
        times["grid"].append(timed(render.grid, rgb, info.class_names, ipc)[1])
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"ipc": ipc, "images": len(labels), "median_s": med, "rounds": times,
            "max_abs_diff_from_leaf": diffs}


def table(cases: list[dict]) -> str:
    rows = ["| IPC (images) | heatmaps: input-grad s | leaf s | speed-up | largest map difference "
            "| overlay s | grid s | page picture, before → now |", "|---|---|---|---|---|---|---|---|"]
    for c in cases:
        m = c["median_s"]
        before, now = m["input-grad"] + m["overlay"] + m["grid"], m["leaf"] + m["overlay"] + m["grid"]
        rows.append(f"| {c['ipc']} ({c['images']}) | {m['input-grad']:.4f} | {m['leaf']:.4f} | "
                    f"{m['input-grad'] / m['leaf']:.2f}x | {c['max_abs_diff_from_leaf']['input-grad']:.1e} | "
                    f"{m['overlay']:.4f} | {m['grid']:.4f} | {before:.3f} → {now:.3f} s |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (the page's server shares its cores)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--ipc", default="1,10", help="comma-separated images per class")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.threads < 1 or args.rounds < 1:
        p.error("--threads and --rounds must be at least 1")
    torch.set_num_threads(args.threads)
    info, proxy = dataset_info("fashion-mnist"), load_classifier("embedded:fashion-mnist", "cpu")
    load_before = os.getloadavg()
    cases = [measure(proxy, info, int(ipc), args.rounds) for ipc in args.ipc.split(",")]
    load_after = os.getloadavg()
    print(f"threads {args.threads}, {args.rounds} rounds, load before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(table(cases))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "load_before": load_before,
                                         "load_after": load_after, "torch": torch.__version__, "cases": cases},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
