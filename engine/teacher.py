"""A run's teacher, as its folder records it and as a soft-label evaluation (the `sre2l` protocol) loads it.

The teacher is the run's classifier: SRe²L's frozen BatchNorm teacher, and for every other objective the
proxy of its CAM distance, named by the run's classifier spec ('embedded:fashion-mnist',
'torchvision:resnet18[=PATH]', 'trained:resnet18=PATH'). run.json and export.json record
{"spec": ..., "sha256": ...}: the sha256 of the weights file where there is one (the embedded asset's is
the one its loader checks), so an evaluation can refuse a file that changed since the run; spec None means
the classifier was handed to the run in-process (tests, embedding apps) and only `--teacher` can name it.
"""
from __future__ import annotations

import torch
from torch import nn

from .classifiers import load_classifier
from .classifiers.assets import file_sha256
from .classifiers.fashion_mnist import ASSET_SHA256
from .classifiers.registry import classifier_file
from .data import dataset_info
from .data.imagenet_subsets import imagenet_indices, subsets

EMBEDDED = "embedded:fashion-mnist"


class TeacherError(ValueError):
    """The teacher cannot be found or does not fit; one sentence saying why and what to pass."""


def weights_sha256(spec: str) -> str | None:
    """The sha256 of the weights file `spec` reads; None when it names no file that exists."""
    if spec == EMBEDDED:
        return ASSET_SHA256
    try:
        path = classifier_file(spec)
    except ValueError:
        return None
    return file_sha256(path) if path is not None and path.is_file() else None


def teacher_record(spec: str | None) -> dict:
    """What a run folder records of its teacher (spec None: handed to the run in-process)."""
    return {"spec": spec, "sha256": None if spec is None else weights_sha256(spec)}


def load_teacher(record: dict | None, dataset: str, device: torch.device | str = "cpu",
                 override: str | None = None) -> tuple[nn.Module, dict]:
    """(teacher, its record) for a soft-label evaluation of a run on `dataset`: the teacher the run's folder
    records, or `override` (a classifier spec, `--teacher`); its logits restricted to an ImageNet subset's
    classes where the dataset is one."""
    spec = override or (record or {}).get("spec")
    if spec is None:
        why = "records no teacher (it was made before runs recorded one)" if record is None else \
            "was handed its classifier in-process, so its folder cannot name the teacher"
        raise TeacherError(f"this run {why}; pass --teacher SPEC (the --classifier the run was distilled with)")
    found = teacher_record(spec)
    expected = None if override else record.get("sha256")
    if expected and found["sha256"] and found["sha256"] != expected:
        raise TeacherError(f"the teacher's weights ({spec}) have changed since the run (sha256 {found['sha256'][:12]}, "
                           f"recorded {expected[:12]}); restore the file, or pass --teacher {spec} to use it as it is")
    try:
        teacher = load_classifier(spec, device)
    except ValueError as exc:
        raise TeacherError(f"the teacher {spec} cannot be loaded ({str(exc).rstrip('.')}); put its weights back "
                           "or pass --teacher SPEC") from None
    return fit_to_dataset(teacher, dataset), found


def fit_to_dataset(teacher: nn.Module, dataset: str) -> nn.Module:
    """The teacher with one logit per class of `dataset` (an ImageNet classifier restricted to a subset)."""
    classes = dataset_info(dataset).num_classes
    width = getattr(teacher, "num_classes", None)
    if width is None or width == classes:
        return teacher
    if dataset in subsets() and hasattr(teacher, "restricted_to"):
        return teacher.restricted_to(imagenet_indices(dataset))
    raise TeacherError(f"the teacher has {width} classes but {dataset} has {classes}; pass --teacher with a "
                       "classifier trained on this dataset")


__all__ = ["TeacherError", "fit_to_dataset", "load_teacher", "teacher_record", "weights_sha256"]
