"""`trained:resnet18=PATH`: a ResNet-18 trained by `train-classifier` (e.g. SRe²L's Tiny-ImageNet teacher).

PATH is what `train-classifier --export` writes: the asset format of the embedded proxy (fashion_mnist.py:
`format`, `arch`, float16 `state_dict`, `meta` with the dataset it was trained on), for any dataset the
trainer supports; its inputs are normalised with that dataset's statistics. A plain state dict, or a
dict holding one under "model" (SRe²L's own Tiny checkpoints, re-saved without their argparse
namespace), of torchvision's ResNet-18 with a 3x3 stem and no max-pool is read as a Tiny-ImageNet
teacher, the only dataset SRe²L trains such a network on.
"""
from __future__ import annotations

from pathlib import Path

import torch

from engine.data import dataset_info

from . import registry
from .assets import load_weights_only
from .fashion_mnist import ASSET_FORMAT
from .proxy import ClassifierError, InputSpec, ProxyClassifier
from .small_resnet import SmallResNetConfig, build_small_resnet18

NAME = "trained:resnet18"
CAM_LAYER = "layer4"
FIX = ("export one with `python -m engine train-classifier --dataset DATASET --out DIR --export FILE` and pass "
       "--classifier trained:resnet18=FILE")


def input_spec(dataset: str) -> InputSpec:
    """The trainer normalises with the dataset's own statistics, and the proxy gets [-1, 1] images."""
    info = dataset_info(dataset)
    return InputSpec(channels=info.channels, mean=info.mean, std=info.std)


def from_asset(asset: dict, source: str | Path) -> ProxyClassifier:
    meta = asset.get("meta") or {}
    dataset = meta.get("dataset")
    try:
        spec = input_spec(dataset)
        arch = SmallResNetConfig(**asset["arch"])
    except (ValueError, TypeError, KeyError) as err:
        raise ClassifierError(f"{source} does not name a known dataset and architecture ({err}); {FIX}.") from err
    return _proxy(arch, asset["state_dict"], spec, meta, source)


def from_state_dict(state: dict, source: str | Path) -> ProxyClassifier:
    try:
        stem, fc = state["conv1.weight"], state["fc.weight"]
    except (KeyError, TypeError):
        raise ClassifierError(f"{source} is neither a train-classifier export nor a ResNet-18 state dict; {FIX}.") from None
    arch = SmallResNetConfig(in_channels=stem.shape[1], num_classes=fc.shape[0], width=stem.shape[0])
    if tuple(stem.shape[2:]) != (3, 3) or arch.num_classes != 200 or arch.in_channels != 3:
        raise ClassifierError(f"{source} is a ResNet-18 with a {tuple(stem.shape[2:])} stem and {arch.num_classes} "
                              "classes; a plain state dict is read only as SRe²L's Tiny-ImageNet teacher (3x3 stem, "
                              f"200 classes); {FIX}.")
    return _proxy(arch, state, input_spec("tiny-imagenet"), {"dataset": "tiny-imagenet", "source": str(source)}, source)


def _proxy(arch: SmallResNetConfig, state: dict, spec: InputSpec, meta: dict, source) -> ProxyClassifier:
    if arch.in_channels != spec.channels:
        raise ClassifierError(f"{source} takes {arch.in_channels}-channel images but its dataset has {spec.channels}; {FIX}.")
    net = build_small_resnet18(arch)
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, AttributeError) as err:
        raise ClassifierError(f"{source}'s weights do not fit its ResNet-18 ({err}); {FIX}.") from err
    return ProxyClassifier(net, spec, CAM_LAYER, arch.num_classes, meta={**meta, "source": str(source)})


def load_trained(path: str | Path, device: torch.device | str = "cpu") -> ProxyClassifier:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ClassifierError(f"the classifier file {path} does not exist; {FIX}.")
    payload = load_weights_only(path, FIX)
    if isinstance(payload, dict) and payload.get("format") == ASSET_FORMAT:
        proxy = from_asset(payload, path)
    elif isinstance(payload, dict):
        proxy = from_state_dict(payload.get("model", payload), path)
    else:
        raise ClassifierError(f"{path} holds a {type(payload).__name__}, not a classifier; {FIX}.")
    return proxy.to(device)


def _loader(argument: str | None, device: torch.device) -> ProxyClassifier:
    if not argument:
        raise ClassifierError(f"'{NAME}' needs the file: '{NAME}=/path/to/classifier.pt'; {FIX}.")
    return load_trained(argument, device)


# Registered from here, beside the loader (one entry of registry._CLASSIFIERS).
registry._CLASSIFIERS.setdefault(NAME, _loader)
