"""Noise processes for training and samplers for generation, on MONAI schedulers."""

from medsynth.diffusion.process import NoiseProcess
from medsynth.diffusion.sampling import sample

__all__ = ["NoiseProcess", "sample"]
