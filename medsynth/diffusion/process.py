"""The forward (noising) process and the training target, for DDPM and rectified flow (MONAI schedulers)."""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDPMScheduler, RFlowScheduler

from medsynth.config import DiffusionConfig


class NoiseProcess:
    """Draws timesteps, noises clean images and gives the regression target.

    DDPM: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps; target eps or v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0.
    Rectified flow: x_t = (1 - t/T) x_0 + (t/T) eps; target the velocity x_0 - eps (MONAI's convention).
    """

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.num_train_timesteps = cfg.train_timesteps
        if cfg.process == "ddpm":
            self.scheduler = DDPMScheduler(cfg.train_timesteps, schedule=cfg.beta_schedule, prediction_type=cfg.prediction)
        else:
            self.scheduler = RFlowScheduler(cfg.train_timesteps, use_discrete_timesteps=False)

    def sample_timesteps(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(B,) timesteps: integers in [0, T) for DDPM; reals in (0, T) for rectified flow (uniform or logit-normal)."""
        T = self.num_train_timesteps
        if self.cfg.process == "ddpm":
            return torch.randint(0, T, (batch,), generator=generator)
        if self.cfg.timestep_sampling == "logit-normal":  # more weight on mid-range noise levels (SD3)
            return torch.sigmoid(torch.randn(batch, generator=generator)) * T
        return torch.rand(batch, generator=generator) * T

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(x0, noise, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.cfg.process == "rflow":
            return x0 - noise
        if self.cfg.prediction == "v_prediction":
            return self.scheduler.get_velocity(x0, noise, t)
        return noise
