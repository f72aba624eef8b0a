"""The network zoo: distillation surrogate (ConvNet) and the evaluation models."""
from .alexnet import AlexNet
from .convnet import ConvNet, default_depth
from .norms import list_norms, make_norm
from .registry import evaluation_lr, get_network, list_networks, networks_for, unsupported_reason
from .resnet import ResNet18
from .spec import NetSpec
from .vgg import VGG11
from .vit import VIT_CIFAR, VIT_IMAGENET, ViT, ViTConfig

__all__ = [
    "AlexNet",
    "ConvNet",
    "NetSpec",
    "ResNet18",
    "VGG11",
    "VIT_CIFAR",
    "VIT_IMAGENET",
    "ViT",
    "ViTConfig",
    "default_depth",
    "evaluation_lr",
    "get_network",
    "list_networks",
    "list_norms",
    "make_norm",
    "networks_for",
    "unsupported_reason",
]
