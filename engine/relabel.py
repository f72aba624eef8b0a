"""SRe²L's relabel as a training recipe: the student learns the teacher's soft predictions of the very crops
it is shown.

Every minibatch, each image gets a fresh random resized crop (scale 0.08-1, aspect ratio 3/4-4/3, resized
back to full size, bilinear) and a horizontal flip with probability 1/2; the frozen teacher labels those
crops and the student minimises

    T² · KL(softmax(teacher / T) ‖ softmax(student / T)),  batch mean,  T = 20.

SRe²L's Tiny-ImageNet student (zeyuanyin/tiny-imagenet `train_kd.py`) multiplies by T² and computes the
teacher's logits on the fly, as here; its ImageNet-1K student (`train_FKD.py`) replays stored logits and does
not multiply. We multiply, so the gradient keeps a cross-entropy's scale and the per-model learning rates of
the other protocols carry over (facts and sources: shared/notes/sre2l_facts.md section 3).

The teacher reads [-1, 1] images, as every classifier of the project does (ProxyClassifier); the student's
images are in the dataset's normalised space, so they are converted for it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import DatasetInfo

TEMPERATURE = 20.0
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
_TRIES = 10  # torchvision's RandomResizedCrop tries 10 boxes before it falls back to the whole image


def crop_boxes(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """[n, 4] (top, left, height, width) of random resized crops, torchvision's rule drawn for n images at
    once: the first of 10 (area, aspect) draws that fits, else the whole image."""
    area = torch.empty(n, _TRIES, dtype=torch.float64).uniform_(*CROP_SCALE, generator=gen) * (h * w)
    log_ratio = torch.empty(n, _TRIES, dtype=torch.float64).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]),
                                                                     generator=gen)
    cw = torch.sqrt(area * torch.exp(log_ratio)).round()
    ch = torch.sqrt(area / torch.exp(log_ratio)).round()
    fits = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
    first = fits.to(torch.uint8).argmax(dim=1)
    rows = torch.arange(n)
    found = fits.any(dim=1)
    cw = torch.where(found, cw[rows, first], torch.tensor(float(w), dtype=torch.float64))
    ch = torch.where(found, ch[rows, first], torch.tensor(float(h), dtype=torch.float64))
    top = (torch.rand(n, generator=gen, dtype=torch.float64) * (h - ch + 1)).floor()
    left = (torch.rand(n, generator=gen, dtype=torch.float64) * (w - cw + 1)).floor()
    return torch.stack([top, left, ch, cw], dim=1)


def crop_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image of x [N, C, H, W] cropped (crop_boxes), resized back to H x W and flipped with p = 1/2,
    all in one grid_sample (the crop's affine map, mirrored for a flip)."""
    n, _, h, w = x.shape
    top, left, ch, cw = crop_boxes(n, h, w, gen).unbind(1)
    flip = torch.rand(n, generator=gen) < 0.5
    # With align_corners=False, output [-1, 1] spans the crop's outer edges [left, left + cw] in pixels.
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = (cw / w) * torch.where(flip, -1.0, 1.0).double()
    theta[:, 0, 2] = (2 * left + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * top + ch) / h - 1
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """The frozen teacher's logits of normalised images x."""
    return teacher(info.to_generator(x)).float()


def soft_label_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), the mean over the batch (KL's batchmean)."""
    log_p = F.log_softmax(student / temperature, dim=1)
    q = F.softmax(teacher / temperature, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature ** 2


__all__ = ["CROP_RATIO", "CROP_SCALE", "TEMPERATURE", "crop_boxes", "crop_flip", "soft_label_loss", "teacher_logits"]
