"""Parameterisations of the synthetic set behind one layered interface."""
from .base import Cut, LayeredGenerator
from .loader import generator_record, load_generator
from .pixel import PixelGenerator

__all__ = ["Cut", "LayeredGenerator", "PixelGenerator", "generator_record", "load_generator"]
