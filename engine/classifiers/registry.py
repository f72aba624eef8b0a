"""Classifier specs -> loaders. A spec is `name` or `name=argument` (the argument is a file path)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from . import fashion_mnist, imagenet
from .proxy import ProxyClassifier

Loader = Callable[[str | None, torch.device], ProxyClassifier]


def _embedded_fashion_mnist(argument: str | None, device: torch.device) -> ProxyClassifier:
    if argument is not None:
        raise ValueError("'embedded:fashion-mnist' is the shipped asset and takes no '=path' argument")
    return fashion_mnist.load_embedded(device)


def _torchvision_resnet18(argument: str | None, device: torch.device) -> ProxyClassifier:
    return imagenet.load_resnet18(Path(argument) if argument else None, device)


_CLASSIFIERS: dict[str, Loader] = {
    "embedded:fashion-mnist": _embedded_fashion_mnist,
    "torchvision:resnet18": _torchvision_resnet18,
}


def list_classifiers() -> list[str]:
    return list(_CLASSIFIERS)


def load_classifier(spec: str, device: torch.device | str = "cpu",
                    class_indices: Sequence[int] | None = None) -> ProxyClassifier:
    """Load a frozen proxy classifier by spec; `class_indices` restricts its logits (e.g. to an ImageNet subset).

    Specs: 'embedded:fashion-mnist'; 'torchvision:resnet18' (torch hub cache) or
    'torchvision:resnet18=/path/to/resnet18-f37072fd.pth'.
    """
    name, has_argument, argument = spec.partition("=")
    if name not in _CLASSIFIERS:
        raise ValueError(f"unknown classifier {spec!r}; valid classifiers: {', '.join(list_classifiers())} "
                         "(torchvision:resnet18 also as 'torchvision:resnet18=/path/to/weights.pth')")
    classifier = _CLASSIFIERS[name](argument if has_argument else None, torch.device(device))
    return classifier.restricted_to(class_indices) if class_indices is not None else classifier
