"""Training the embedded GAN prior: discriminator, losses, EMA, checkpoints, sample grids, the loop."""
from .config import TrainConfig
from .export import export_generator
from .loop import train_prior

__all__ = ["TrainConfig", "export_generator", "train_prior"]
