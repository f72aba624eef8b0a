"""The frozen classifier H-PD's CAM distance (eq. 6) reads: [-1, 1] images in, logits out."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ClassifierError(ValueError):
    """A classifier cannot be loaded; the message names the file and how to fix it."""


@dataclass(frozen=True)
class InputSpec:
    """How [-1, 1] generator-range images become what the backbone was trained on."""

    channels: int  # channels the backbone expects; grey inputs are repeated to match
    mean: tuple[float, ...]  # of the backbone's [0, 1] training images, per channel
    std: tuple[float, ...]
    resize_to: int | None = None  # square side the backbone should see; None keeps the input size

    def __post_init__(self) -> None:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean {self.mean} and std {self.std} need {self.channels} entries each")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.resize_to is not None and self.resize_to < 1:
            raise ValueError(f"resize_to must be >= 1 or None, got {self.resize_to}")


class ProxyClassifier(nn.Module):
    """A frozen, eval-mode backbone behind its own input normalisation.

    `cam_layer` is the backbone module whose output the CAM distance weights by ReLU of the
    gradient of the true-class logit. With `class_indices`, the logits are restricted to those
    backbone classes in that order, so label c means backbone class `class_indices[c]` (an
    ImageNet subset's class c is ImageNet class `class_indices[c]`).
    """

    def __init__(self, backbone: nn.Module, inputs: InputSpec, cam_layer_name: str, backbone_classes: int,
                 class_indices: Sequence[int] | None = None, meta: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.inputs = inputs
        self.cam_layer_name = cam_layer_name
        self.backbone_classes = backbone_classes
        self.meta = dict(meta or {})
        backbone.get_submodule(cam_layer_name)  # fail now, not inside the distillation loop
        self.register_buffer("_mean", torch.tensor(inputs.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(inputs.std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_class_indices", _as_index(class_indices, backbone_classes), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def cam_layer(self) -> nn.Module:
        return self.backbone.get_submodule(self.cam_layer_name)

    @contextmanager
    def cam_layer_as_leaf(self) -> Iterator[list[torch.Tensor]]:
        """While open, the CAM layer's output is handed on as a leaf of its own graph (appended to the
        yielded list, one per forward): a backward from the logits stops there, never running through the
        frozen convolutions below it for an input gradient nobody reads."""
        leaves: list[torch.Tensor] = []

        def as_leaf(module, inputs, output):
            leaves.append(output.detach().requires_grad_(True))
            return leaves[-1]

        handle = self.cam_layer.register_forward_hook(as_leaf)
        try:
            yield leaves
        finally:
            handle.remove()

    @property
    def num_classes(self) -> int:
        """Width of the returned logits."""
        return self._class_indices.numel() or self.backbone_classes

    @property
    def class_indices(self) -> list[int] | None:
        return None if self._class_indices.numel() == 0 else self._class_indices.tolist()

    def restricted_to(self, class_indices: Sequence[int]) -> "ProxyClassifier":
        """The same frozen backbone (shared, not copied) with logits restricted to `class_indices`."""
        return ProxyClassifier(self.backbone, self.inputs, self.cam_layer_name, self.backbone_classes,
                               class_indices, self.meta).to(self._mean.device)

    def train(self, mode: bool = True) -> "ProxyClassifier":
        # Frozen means frozen: a caller's model.train() must not switch BatchNorm to batch statistics.
        return super().train(False)

    def extra_repr(self) -> str:
        return f"inputs={self.inputs}, cam_layer={self.cam_layer_name!r}, class_indices={self.class_indices}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images [N, C, H, W] -> the backbone's normalised input."""
        if images.dim() != 4 or images.shape[1] not in (1, self.inputs.channels):
            raise ValueError(f"expected images [N, 1 or {self.inputs.channels}, H, W], got {tuple(images.shape)}")
        x = (images + 1) / 2
        if x.shape[1] != self.inputs.channels:
            x = x.expand(-1, self.inputs.channels, -1, -1)
        size = self.inputs.resize_to
        if size is not None and x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return (x - self._mean) / self._std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.backbone(self.preprocess(images))
        if self._class_indices.numel():
            logits = logits.index_select(1, self._class_indices)
        return logits


def _as_index(class_indices: Sequence[int] | None, backbone_classes: int) -> torch.Tensor:
    if class_indices is None:
        return torch.empty(0, dtype=torch.long)
    index = torch.as_tensor(list(class_indices), dtype=torch.long)
    if index.dim() != 1 or index.numel() == 0:
        raise ValueError(f"class_indices must be a non-empty list of ints, got {class_indices!r}")
    if len(set(index.tolist())) != index.numel():
        raise ValueError(f"class_indices must be distinct, got {index.tolist()}")
    if (index < 0).any() or (index >= backbone_classes).any():
        raise ValueError(f"class_indices must lie in [0, {backbone_classes}), got {index.tolist()}")
    return index
