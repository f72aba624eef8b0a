"""Parameterisations of the synthetic set behind one layered interface."""
from .base import Cut, LayeredGenerator
from .pixel import PixelGenerator

__all__ = ["Cut", "LayeredGenerator", "PixelGenerator"]
