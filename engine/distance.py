"""H-PD's class-relevant feature distance (paper eq. 6).

For an image x of class y, take the activation A of the proxy classifier's CAM layer and the gradient G
of the class-y logit with respect to A; the class-relevant feature is A * ReLU(G) (LayerCAM's weighting,
before its channel sum). D(S, T) is the squared L2 distance between the per-class means of these
features over real (T) and synthetic (S) images, summed over classes. The proxy is frozen, so the real
side is computed once per run.
"""
from __future__ import annotations

import torch

from .classifiers import ProxyClassifier


def class_relevant_features(proxy: ProxyClassifier, images: torch.Tensor, labels: torch.Tensor,
                            batch: int = 256) -> torch.Tensor:
    """A * ReLU(dlogit_y/dA) for every image ([-1, 1] range), shape [N, C, h, w].

    Only the head above the CAM layer is differentiated (`ProxyClassifier.cam_layer_as_leaf`): with the
    input requiring grad the backward ran through the backbone's convolutions, half the cost of the real
    side's features at every run's start and of the synthetic side's at every step."""
    out = []
    with proxy.cam_layer_as_leaf() as leaves, torch.enable_grad():
        for x, y in zip(images.split(batch), labels.split(batch)):
            leaves.clear()
            logits = proxy(x.detach())
            (grad,) = torch.autograd.grad(logits.gather(1, y.view(-1, 1)).sum(), leaves[0])
            out.append((leaves[0].detach() * grad.clamp(min=0)).to(images.device))
    return torch.cat(out)


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[num_classes, C, h, w]: the mean feature of each class."""
    sums = torch.zeros(num_classes, *features.shape[1:], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).to(features.dtype)
    return sums / counts.view(-1, *[1] * (features.dim() - 1))


class ClassRelevantDistance:
    """D(S, T) against a fixed real set whose class means are computed once at construction."""

    def __init__(self, proxy: ProxyClassifier, real_images: torch.Tensor, real_labels: torch.Tensor,
                 num_classes: int):
        self.proxy = proxy
        self.num_classes = num_classes
        self.real_means = class_means(class_relevant_features(proxy, real_images, real_labels),
                                      real_labels, num_classes)

    def __call__(self, syn_images: torch.Tensor, syn_labels: torch.Tensor) -> float:
        syn = class_means(class_relevant_features(self.proxy, syn_images, syn_labels), syn_labels, self.num_classes)
        present = torch.bincount(syn_labels, minlength=self.num_classes) > 0
        return float(((syn - self.real_means)[present] ** 2).sum())
