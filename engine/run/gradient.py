"""How the image gradient reaches (ws, f): one forward and backward for the whole synthetic batch, or,
when that graph would not fit in memory, the two-pass chunked scheme (no-grad forward of all chunks,
loss gradient w.r.t. the images, then per chunk a forward with grad and the backward of its slice)."""
from __future__ import annotations

import os
from typing import Callable

import torch

Render = Callable[[slice | None], torch.Tensor]   # renders the whole set (None) or a slice of it
LossAndGrad = Callable[[torch.Tensor], tuple[float, torch.Tensor]]

# Autograd keeps several tensors per layer of the size of its output; 8 is a safe multiplier for the
# embedded prior's modulated convolutions. Generators can report their own figure (activation_bytes).
_ACTIVATION_FACTOR = 8
_MEMORY_SHARE = 0.5


def single_pass(render: Render, loss_and_grad: LossAndGrad) -> float:
    images = render(None)
    loss, grad = loss_and_grad(images.detach())
    images.backward(grad)
    return loss


def chunked(render: Render, loss_and_grad: LossAndGrad, n: int, chunk: int) -> float:
    slices = [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]
    with torch.no_grad():
        images = torch.cat([render(s) for s in slices])
    loss, grad = loss_and_grad(images)
    for s in slices:
        render(s).backward(grad[s])
    return loss


def estimate_graph_bytes(generator, cut: int, n: int) -> int:
    """Bytes autograd would keep for one backward of n images from `cut` to the pixels."""
    if hasattr(generator, "activation_bytes"):
        return n * int(generator.activation_bytes(cut))
    per_image = sum(_numel(c.shape) for c in generator.layers[cut:]) * 4 * _ACTIVATION_FACTOR
    return n * per_image


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_scheme(requested: str, generator, cut: int, n: int, device: torch.device) -> str:
    """"single" or "chunked": as requested, or by comparing the graph estimate with free memory."""
    if requested != "auto":
        return requested
    fits = estimate_graph_bytes(generator, cut, n) < _MEMORY_SHARE * available_bytes(device)
    return "single" if fits else "chunked"


def _numel(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out
