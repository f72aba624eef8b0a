"""torchvision's ImageNet ResNet-18 from a user-supplied file or the torch hub cache (never downloaded here)."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torchvision.models import ResNet18_Weights

from .assets import load_weights_only, load_verified
from .proxy import ClassifierError, InputSpec, ProxyClassifier

WEIGHTS = ResNet18_Weights.IMAGENET1K_V1
FILE_NAME = Path(WEIGHTS.url).name  # resnet18-f37072fd.pth
# torch.hub names weight files <name>-<first hex digits of their sha256>.<ext>.
SHA256_PREFIX = FILE_NAME.split("-")[-1].split(".")[0]
CAM_LAYER = "layer4"


def hub_path() -> Path:
    """Where torch.hub keeps (and this loader looks for) the weights, read at call time."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FILE_NAME


def input_spec() -> InputSpec:
    # The weights' own eval transform supplies ImageNet mean/std and the 224 px crop size.
    transform = WEIGHTS.transforms()
    return InputSpec(channels=3, mean=tuple(transform.mean), std=tuple(transform.std),
                     resize_to=transform.crop_size[0])


def _how_to_get() -> str:
    return (f"this machine cannot download it, so fetch {WEIGHTS.url} on a connected machine and put the file "
            f"at {hub_path()}, or pass its path as 'torchvision:resnet18=/path/to/{FILE_NAME}'")


def load_resnet18(path: str | Path | None = None, device: torch.device | str = "cpu") -> ProxyClassifier:
    """torchvision's ImageNet ResNet-18 as a frozen proxy; `path` None means the torch hub cache."""
    path = Path(path).expanduser() if path else hub_path()
    if not path.is_file():
        raise ClassifierError(f"torchvision's ImageNet ResNet-18 weights are not at {path}; {_how_to_get()}.")
    fix = _how_to_get()
    # Only the canonical file name promises a hash; a renamed or fine-tuned file is checked by its keys.
    state = load_verified(path, SHA256_PREFIX, fix) if path.name == FILE_NAME else load_weights_only(path, fix)
    net = torchvision.models.resnet18(weights=None, num_classes=len(WEIGHTS.meta["categories"]))
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ClassifierError(f"{path} is not a torchvision ResNet-18 ImageNet state dict ({err}); {fix}.") from err
    meta = {"weights": str(WEIGHTS), "source": str(path), "categories": list(WEIGHTS.meta["categories"])}
    return ProxyClassifier(net, input_spec(), CAM_LAYER, net.fc.out_features, meta=meta).to(device)
