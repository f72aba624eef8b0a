"""Frozen proxy classifiers for H-PD's class-relevant CAM distance (eq. 6), loaded by spec."""
from .fashion_mnist import load_embedded
from .imagenet import load_resnet18
from .proxy import ClassifierError, InputSpec, ProxyClassifier
from .registry import list_classifiers, load_classifier
from .trained import load_trained  # registers trained:resnet18=PATH (train-classifier's exports)

__all__ = ["ClassifierError", "InputSpec", "ProxyClassifier", "list_classifiers", "load_classifier",
           "load_embedded", "load_resnet18", "load_trained"]
