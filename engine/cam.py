"""CAM heatmaps of synthetic images on the proxy classifier (LayerCAM: the same weighting as eq. 6)."""
from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import LayerCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from .classifiers import ProxyClassifier


def cam_heatmaps(proxy: ProxyClassifier, images_pm1: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """[N, H, W] float32 in [0, 1]: where the true-class logit draws its evidence, per image."""
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= proxy.num_classes):
        # grad-cam's context manager swallows IndexError; check the targets ourselves.
        raise ValueError(f"labels must lie in 0..{proxy.num_classes - 1}")
    # The proxy is frozen: the leaf made at the CAM layer gives the logits a gradient to follow, and the
    # backward stops there (entered before LayerCAM, so its hooks see the leaf).
    x = images_pm1.detach().float()
    with proxy.cam_layer_as_leaf(), LayerCAM(model=proxy, target_layers=[proxy.cam_layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in labels])
    proxy.zero_grad(set_to_none=True)
    return maps


def overlay(images01: torch.Tensor, maps: np.ndarray) -> list[np.ndarray]:
    """RGB uint8 images with the heatmap blended in (grey images are repeated to three channels)."""
    out = []
    for img, m in zip(images01.detach().cpu(), maps):
        rgb = img.expand(3, -1, -1).permute(1, 2, 0).numpy().astype(np.float32)
        out.append(show_cam_on_image(rgb, m, use_rgb=True, image_weight=0.6))
    return out
