"""Classifier specs -> loaders. A spec is `name` or `name=argument` (the argument is a file path)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from . import fashion_mnist, imagenet
from .proxy import ClassifierError, ProxyClassifier

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


def classifier_file(spec: str) -> Path | None:
    """The weight file a spec would read (None: a shipped asset); raises ValueError for an unknown spec."""
    name, has_argument, argument = spec.partition("=")
    if name not in _CLASSIFIERS:
        raise ValueError(f"unknown classifier {spec!r}; valid classifiers: {', '.join(list_classifiers())} "
                         "(torchvision:resnet18 also as 'torchvision:resnet18=/path/to/weights.pth')")
    if name == "embedded:fashion-mnist":
        if has_argument:
            raise ValueError("'embedded:fashion-mnist' is the shipped asset and takes no '=path' argument")
        return None
    return Path(argument).expanduser() if argument else imagenet.hub_path()


def check_classifier_spec(spec: str) -> None:
    """Without loading it: the spec is known and its weight file exists, is readable and is a torch file
    (a zip archive or a pickle). Raises ValueError (ClassifierError) with one sentence."""
    path = classifier_file(spec)
    if path is None:
        return
    if not path.is_file():
        raise ClassifierError(f"the classifier weights are not at {path}; give an existing file "
                              "(torchvision:resnet18=/path/to/resnet18-f37072fd.pth)")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise ClassifierError(f"{path} cannot be read ({err.strerror or type(err).__name__})") from None
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise ClassifierError(f"{path} is not a torch weight file (neither a zip archive nor a pickle)")


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
