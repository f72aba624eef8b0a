"""The embedded Fashion-MNIST proxy: the shipped asset, its sha256, and the asset format.

The asset is a plain dict of tensors, numbers and strings (loadable with `weights_only=True`):
`format`, `arch` (SmallResNetConfig fields), `state_dict` (float16 storage) and `meta`
(test accuracy, epochs, seed, threads, wall time).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.data import dataset_info

from .assets import load_verified
from .proxy import ClassifierError, InputSpec, ProxyClassifier
from .small_resnet import SmallResNetConfig, build_small_resnet18

ASSET_FORMAT = "hpd-studio/proxy-classifier/1"
ASSET_PATH = Path(__file__).resolve().parents[2] / "assets" / "fashion_mnist_classifier.pt"
# Recorded when the asset was exported; a retrained asset needs its new sha256 (printed by --export) here.
ASSET_SHA256 = "7fe464e939fd88a6038d4d811d5f30579ee1fe9c1ca16d6eb5c777a420013ca1"
DATASET = "fashion-mnist"
ARCH = SmallResNetConfig(in_channels=1, num_classes=10, width=16)
CAM_LAYER = "layer4"
REGENERATE = ("python -m engine train-classifier --dataset fashion-mnist --out checkpoints/classifier "
              "--epochs 20 --seed 0 --threads 1 --device cpu --export assets/fashion_mnist_classifier.pt")
STORAGE_DTYPE = torch.float16  # halves the file; the export checks accuracy is unchanged


def input_spec() -> InputSpec:
    """The backbone was trained on the dataset's own normalisation, i.e. exactly the [-1, 1] range."""
    info = dataset_info(DATASET)
    return InputSpec(channels=info.channels, mean=info.mean, std=info.std)


def make_asset(net: nn.Module, arch: SmallResNetConfig, meta: dict[str, Any]) -> dict[str, Any]:
    state = {k: v.to(STORAGE_DTYPE) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    return {"format": ASSET_FORMAT, "arch": asdict(arch), "state_dict": state, "meta": dict(meta)}


def proxy_from_asset(asset: dict[str, Any], source: str | Path = "the asset") -> ProxyClassifier:
    if not isinstance(asset, dict) or asset.get("format") != ASSET_FORMAT:
        raise ClassifierError(f"{source} is not a {ASSET_FORMAT} file; regenerate it with `{REGENERATE}`.")
    arch = SmallResNetConfig(**asset["arch"])
    net = build_small_resnet18(arch)
    # Float16 storage widens back to float32 here: the CAM gradients want full precision.
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in asset["state_dict"].items()})
    return ProxyClassifier(net, input_spec(), CAM_LAYER, arch.num_classes, meta=asset.get("meta"))


def load_embedded(device: torch.device | str = "cpu", path: str | Path = ASSET_PATH,
                  sha256: str = ASSET_SHA256) -> ProxyClassifier:
    """The shipped proxy, checked against its recorded sha256 before loading."""
    if not sha256:
        raise ClassifierError(f"no sha256 is recorded for {path} yet; train and export it with `{REGENERATE}` "
                              "and record the printed sha256 in engine/classifiers/fashion_mnist.py")
    asset = load_verified(path, sha256, f"regenerate it with `{REGENERATE}`")
    return proxy_from_asset(asset, path).to(device)
