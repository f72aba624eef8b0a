"""StyleGAN-XL, implemented here from the architecture notes; released checkpoints load without running their code.

    G = load_stylegan_xl("imagenet128.pkl", device)            # a LayeredGenerator
    G = random_stylegan_xl(stem_config(StemDesign(...)), torch.Generator().manual_seed(0))
"""
from .batching import advance_chunked, backward_chunked, features_chunked, synthesize_chunked
from .checkpoint import Checkpoint, read_checkpoint
from .config import ExecutionOptions, GeneratorConfig, LayerSpec, SynthesisConfig
from .errors import CheckpointError
from .generator import StyleGANXLGenerator
from .loader import load_stylegan_xl, random_stylegan_xl
from .stem import StemDesign, stem_config

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "ExecutionOptions",
    "GeneratorConfig",
    "LayerSpec",
    "StemDesign",
    "StyleGANXLGenerator",
    "SynthesisConfig",
    "advance_chunked",
    "backward_chunked",
    "features_chunked",
    "load_stylegan_xl",
    "random_stylegan_xl",
    "read_checkpoint",
    "stem_config",
    "synthesize_chunked",
]
