"""Parameterisations of the synthetic set behind one layered interface."""
from .base import Cut, LayeredGenerator
from .loader import load_generator
from .pixel import PixelGenerator

__all__ = ["Cut", "LayeredGenerator", "PixelGenerator", "load_generator"]
