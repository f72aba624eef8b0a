"""load_stylegan_xl: a released StyleGAN-XL pickle -> a ready StyleGANXLGenerator (its G_ema)."""
from __future__ import annotations

import os
import warnings

import torch

from .checkpoint import read_checkpoint
from .config import ExecutionOptions, GeneratorConfig
from .errors import CheckpointError
from .generator import StyleGANXLGenerator


def _load_state(model: StyleGANXLGenerator, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy stored tensors into the model's own (the fixtures' tensors are stride-0 views)."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise CheckpointError(f"{source} holds an unknown StyleGAN-XL architecture: G_ema lacks {', '.join(missing[:5])}")
    extra = [key for key in state if key not in expected]
    if extra:
        warnings.warn(f"{source}: ignoring tensors the generator does not use: {', '.join(extra[:10])}", stacklevel=3)
    for key, target in expected.items():
        value = state[key]
        if value.shape != target.shape or not value.is_floating_point():
            raise CheckpointError(f"{source} holds an unknown StyleGAN-XL architecture: {key} is "
                                  f"{value.dtype} {list(value.shape)}, its layer attributes need {target.dtype} {list(target.shape)}")
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(state[key])


def load_stylegan_xl(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    *,
    require_conditional: bool = True,
    options: ExecutionOptions = ExecutionOptions(),
) -> StyleGANXLGenerator:
    """The EMA generator of a StyleGAN-XL training pickle, frozen, in eval mode, on `device`.

    The file is read as data only (see unpickler.py). Raises CheckpointError, with one sentence,
    for a missing, corrupt or truncated file, a pickle without G_ema, an unconditional model when
    `require_conditional`, an architecture this package cannot build, or a file naming code to run.
    """
    checkpoint = read_checkpoint(path)
    if require_conditional and not checkpoint.config.mapping.conditional:
        raise CheckpointError(f"{path} holds an unconditional generator (c_dim 0), but a class-conditional one is required")
    model = StyleGANXLGenerator(checkpoint.config, options)
    _load_state(model, checkpoint.state, str(path))
    model.source_sha256 = checkpoint.sha256  # run.json's generator_weights, without reading the file again
    return model.eval().requires_grad_(False).to(device)


def random_stylegan_xl(
    config: GeneratorConfig, generator: torch.Generator, options: ExecutionOptions = ExecutionOptions()
) -> StyleGANXLGenerator:
    """A frozen generator of any configuration with random weights drawn from `generator`."""
    model = StyleGANXLGenerator(config, options)
    model.reset_parameters(generator)
    return model.eval().requires_grad_(False)
