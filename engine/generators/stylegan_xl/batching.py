"""Run a layered generator over a batch in chunks of `chunk_size` samples (H-PD's sg_batch).

The distillation step is two passes: render all images without a graph, compute the loss and
dL/dimages on them, then re-render chunk by chunk with a graph and push each chunk's image
gradient into ws and f. Only one chunk's graph is alive at a time, so memory is bounded by the
chunk size, not the number of synthetic images. Works with any LayeredGenerator.
"""
from __future__ import annotations

import torch

from ..base import LayeredGenerator


def _chunks(n: int, chunk_size: int) -> list[slice]:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [slice(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]


@torch.no_grad()
def synthesize_chunked(G: LayeredGenerator, ws: torch.Tensor, f: torch.Tensor, layer: int, chunk_size: int) -> torch.Tensor:
    """Images from cut `layer` without a graph: the first pass."""
    return torch.cat([G.synthesize(ws[s], f[s], layer) for s in _chunks(len(ws), chunk_size)])


@torch.no_grad()
def features_chunked(G: LayeredGenerator, ws: torch.Tensor, layer: int, chunk_size: int) -> torch.Tensor:
    """The features at cut `layer` without a graph (initialising f)."""
    return torch.cat([G.features(ws[s], layer) for s in _chunks(len(ws), chunk_size)])


@torch.no_grad()
def advance_chunked(G: LayeredGenerator, ws: torch.Tensor, f: torch.Tensor, layer: int, chunk_size: int) -> torch.Tensor:
    """The features at cut `layer + 1` from f at cut `layer`, without a graph (moving to the next space)."""
    return torch.cat([G.advance(ws[s], f[s], layer) for s in _chunks(len(ws), chunk_size)])


def _accumulate(leaf: torch.Tensor, rows: slice, grad: torch.Tensor | None) -> None:
    if grad is None:
        return
    if leaf.grad is None:
        leaf.grad = torch.zeros_like(leaf)
    leaf.grad[rows] += grad


def backward_chunked(
    G: LayeredGenerator, ws: torch.Tensor, f: torch.Tensor, layer: int, grad_images: torch.Tensor, chunk_size: int
) -> None:
    """The second pass: re-render each chunk with a graph and add its share of dL/d(ws, f) to `.grad`.

    Args:
        ws, f: leaf tensors; only those with requires_grad receive gradients.
        grad_images: dL/dimages for the images `synthesize_chunked` returned, same shape.
    """
    if grad_images.shape[0] != len(ws) or len(f) != len(ws):
        raise ValueError(f"ws ({len(ws)}), f ({len(f)}) and grad_images ({grad_images.shape[0]}) need the same batch size")
    leaves = [t for t in (ws, f) if t.requires_grad]
    if any(not t.is_leaf for t in leaves):
        raise ValueError("backward_chunked accumulates into .grad, so ws and f must be leaf tensors")
    for rows in _chunks(len(ws), chunk_size):
        ws_c = ws[rows].detach().requires_grad_(ws.requires_grad)
        f_c = f[rows].detach().requires_grad_(f.requires_grad)
        inputs = [t for t in (ws_c, f_c) if t.requires_grad]
        if not inputs:
            return
        with torch.enable_grad():
            images = G.synthesize(ws_c, f_c, layer)
            grads = torch.autograd.grad(images, inputs, grad_images[rows].to(images.dtype), allow_unused=True)
        for leaf, grad in zip(leaves, grads):
            _accumulate(leaf, rows, grad)
