"""`load_generator(spec)`: one entry point from a user-facing spec string to a LayeredGenerator."""
from __future__ import annotations

from pathlib import Path

import torch

from .base import LayeredGenerator

EMBEDDED_PREFIX = "embedded:"
EMBEDDED = ("fashion-mnist",)


def check_generator_spec(spec: str) -> None:
    """What a spec promises, checked without loading it (a server checks this before queuing a run):
    a known embedded name, or an existing, readable pickle file. Raises ValueError with one sentence."""
    if spec.startswith(EMBEDDED_PREFIX):
        if spec[len(EMBEDDED_PREFIX):] not in EMBEDDED:
            raise ValueError(f"unknown embedded generator {spec!r}; choose one of: "
                             f"{', '.join(EMBEDDED_PREFIX + n for n in EMBEDDED)}, or a StyleGAN-XL .pkl path")
        return
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"generator file {path} does not exist; give a StyleGAN-XL checkpoint (.pkl) "
                         f"or one of: {', '.join(EMBEDDED_PREFIX + n for n in EMBEDDED)}")
    if path.suffix != ".pkl":
        raise ValueError(f"{path} is not a supported generator checkpoint; StyleGAN-XL .pkl files are supported.")
    from .stylegan_xl.checkpoint import check_checkpoint_file
    check_checkpoint_file(path)


def generator_record(spec: str | None, generator=None) -> dict:
    """What a run folder records of its generator, so a result names the exact weights it came from:
    {"spec", "sha256"} (plus "kimg" for an embedded prior); spec None: handed to the run in-process.
    `generator`: the one loaded from `spec`; a checkpoint's sha256 is the one its reader hashed as it read."""
    if spec is None or spec == "pixel":  # "pixel": the Pixel method's identity generator, no weights
        return {"spec": spec, "sha256": None}
    if spec.startswith(EMBEDDED_PREFIX):
        from .embedded import prior_asset
        asset = prior_asset(spec[len(EMBEDDED_PREFIX):])
        return {"spec": spec, "sha256": asset.sha256, "kimg": asset.kimg}  # the sha256 its loader checks
    known = getattr(generator, "source_sha256", None)
    if known:
        return {"spec": spec, "sha256": known}
    from ..classifiers.assets import file_sha256
    path = Path(spec)
    return {"spec": spec, "sha256": file_sha256(path) if path.is_file() else None}


def load_generator(spec: str, device: torch.device | str = "cpu") -> LayeredGenerator:
    """"embedded:<dataset>" -> the prior shipped in assets/; a path -> a StyleGAN-XL checkpoint (.pkl)."""
    check_generator_spec(spec)  # the same sentences a server gives before it queues a run
    if spec.startswith(EMBEDDED_PREFIX):
        from .embedded import load_embedded
        return load_embedded(spec[len(EMBEDDED_PREFIX):], device)
    from .stylegan_xl import load_stylegan_xl
    return load_stylegan_xl(Path(spec), device)
