"""Upper bounds of a run, checked before any work: fixed ceilings on every count a config holds, the
device it names, and a memory estimate for the chosen generator and device.

The ceilings are far above what any published setting uses (IPC 50, 1000 evaluation epochs, 256 real
images per class); they exist so that one config cannot ask for 10^12 steps or 10^9 images. The memory
estimate refuses what the device could not hold even when empty (the same per-layer graph estimate
that `--sg-batch auto` compares with free memory), so an impossible IPC is one sentence at start, not
allocator text ten minutes later.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from . import gradient

# field -> the largest value accepted. Lower bounds are RunConfig's (every count is at least 1).
CEILINGS: dict[str, int] = {
    "ipc": 1000,
    "steps_per_space": 100_000,
    "glad_steps": 1_000_000,
    "layers_per_space": 1000,
    "batch_real": 10_000,
    "mean_ws_samples": 100_000,
    "eval_repeats": 100,
    "eval_epochs": 10_000,
    "distance_real_per_class": 10_000,
    "holdout_per_class": 10_000,
    "sg_chunk": 10_000,
    "outer_loop": 1000,
    "inner_loop": 10_000,
    "syn_steps": 1000,
    "expert_epochs": 1000,
    "max_start_epoch": 10_000,
    "preview_every": 1_000_000,
}
DEVICE_TYPES = ("cpu", "cuda")
MEMORY_SHARE = 0.9          # of the device's total memory a single run may plan to use
# Activations the matching network keeps per real image and pixel: 128 channels of 4 bytes over the
# ConvNet's three resolutions (1 + 1/4 + 1/16 of the image) with two tensors kept per layer.
_NET_BYTES_PER_PIXEL = 1344
_LATENT_COPIES = 4          # value, gradient, momentum and the kept best copy of every latent
_IMAGE_COPIES = 3           # rendered images, their gradient and the preview copy


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_ceilings(config) -> None:
    """Raise ValueError naming the first field above its ceiling."""
    for name, limit in CEILINGS.items():
        value = getattr(config, name, None)
        if value is not None and value > limit:
            raise ValueError(f"{flag(name)} must be at most {limit}, got {value}")


def check_device_name(name: str) -> torch.device:
    """The device string parses and is of a kind runs use (cpu, cuda); existence is check_device's."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type not in DEVICE_TYPES:
        raise ValueError(f"--device {name} is not supported; use cpu, cuda or cuda:N")
    return device


def check_device(name: str) -> torch.device:
    """The device exists on this machine (cuda:N with N below the device count)."""
    device = check_device_name(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} was asked for but CUDA is not available here; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name} does not exist: this machine has {count} CUDA device(s), "
                             f"cuda:0..cuda:{count - 1}")
    return device


def device_bytes(device: torch.device | str) -> int:
    """Total memory of the device (CPU: physical memory, or the container's limit when lower)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device.index or 0).total_memory)
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _numel(shape) -> int:
    return math.prod(int(s) for s in shape)


def estimate(config, G, num_classes: int, channels: int, resolution: int, cuts: list[int]) -> dict[str, tuple[int, str]]:
    """Bytes a run holds at its peak, by part: {part: (bytes, the field that scales it)}.

    `cuts` are the cuts the run optimises at (the earliest one has the largest graph)."""
    n = num_classes * config.ipc
    cut = min(cuts)
    image = channels * resolution * resolution
    latent = G.num_ws * G.w_dim + _numel(G.layers[cut].shape)
    parts = {"the synthetic set": (n * (latent * _LATENT_COPIES + image * _IMAGE_COPIES) * 4, "ipc")}
    if config.sg_batch == "single":
        parts["the generator's gradient graph"] = (gradient.estimate_graph_bytes(G, cut, n), "ipc")
    else:  # auto falls back to chunks of sg_chunk images when the whole batch does not fit
        parts["the generator's gradient graph"] = (gradient.estimate_graph_bytes(G, cut, min(n, config.sg_chunk)),
                                                   "sg_chunk")
    parts["the real batch"] = (config.batch_real * resolution * resolution * _NET_BYTES_PER_PIXEL
                               + config.batch_real * image * 4, "batch_real")
    if config.method != "pixel" and config.init_kind == "avg":
        parts["the average-noise initialisation"] = (config.mean_ws_samples * (G.z_dim + G.num_ws * G.w_dim) * 4 * 2,
                                                     "mean_ws_samples")
    if config.distance:
        parts["the distance's real set"] = (num_classes * config.distance_real_per_class * image * 4,
                                           "distance_real_per_class")
    if config.accuracy_pick:
        parts["the held-out images"] = (num_classes * config.holdout_per_class * image * 4, "holdout_per_class")
    return parts


def check_memory(config, G, num_classes: int, channels: int, resolution: int, cuts: list[int],
                 budget: int | None = None) -> None:
    """Raise ValueError (one sentence naming the field to lower) when the run cannot fit the device."""
    parts = estimate(config, G, num_classes, channels, resolution, cuts)
    total = sum(b for b, _ in parts.values())
    budget = int(MEMORY_SHARE * device_bytes(config.device)) if budget is None else budget
    if total <= budget:
        return
    part, (size, name) = max(parts.items(), key=lambda kv: kv[1][0])
    hint = " or --sg-batch chunked" if name == "ipc" and config.sg_batch == "single" else ""
    raise ValueError(f"{flag(name)} {getattr(config, name)} needs about {human_bytes(total)} on {config.device} "
                     f"({part}: {human_bytes(size)}), more than the {human_bytes(budget)} a run may use there; "
                     f"lower {flag(name)}{hint}")


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"
