"""Noise processes for training and samplers for generation, on MONAI schedulers (process.py, sampling.py)."""

from medsynth.diffusion.process import PROCESSES, NoiseProcess, noise_process
from medsynth.diffusion.inpaint import inpaint
from medsynth.diffusion.sampling import sample

__all__ = ["PROCESSES", "NoiseProcess", "inpaint", "noise_process", "sample"]
