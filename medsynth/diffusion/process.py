"""Noise processes (MONAI schedulers): the forward process and training target, and the sampler that reverses it.

DDPM: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps; target eps, or v = sqrt(alpha_bar_t) eps -
sqrt(1 - alpha_bar_t) x_0; sampled with DDIM. Rectified flow: x_t = (1 - t/T) x_0 + (t/T) eps; target the velocity
x_0 - eps (MONAI's convention); sampled with Euler steps. A process is chosen once, from the config, by
`noise_process`; nothing else branches on its name. A new process is a class in PROCESSES.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler

from medsynth.config import DiffusionConfig


class NoiseProcess:
    """Draws timesteps, noises clean images, gives the regression target, and builds the sampling trajectory."""

    name = ""
    sampler = ""                       # how generation reverses it (recorded with every study)
    timestep_dtype = torch.float32     # what the network is given as t

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.num_train_timesteps = cfg.train_timesteps
        self.scheduler = self.training_scheduler()

    def training_scheduler(self):
        raise NotImplementedError

    def sample_timesteps(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(B,) training timesteps."""
        raise NotImplementedError

    def timestep_at(self, fraction: float) -> float | int:
        """The timestep a fraction of the way from clean (0) to pure noise (1)."""
        raise NotImplementedError

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(x0, noise, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def trajectory(self, steps: int, shape: Sequence[int], clip: bool, device: torch.device) -> "Trajectory":
        raise NotImplementedError


class Trajectory:
    """The sampling side of a process: the timesteps visited (each with the next one) and one update x_t -> x_next."""

    def __init__(self, scheduler, pairs: list[tuple[torch.Tensor, torch.Tensor | None]], dtype: torch.dtype) -> None:
        self.scheduler, self.pairs, self.dtype = scheduler, pairs, dtype

    def model_time(self, t: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
        """(n,) timesteps as the network takes them."""
        return t.to(self.dtype).expand(n).to(device)

    def noise_fraction(self, t: torch.Tensor) -> float:
        """How far `t` lies from clean (0) towards pure noise (1): the inverse of NoiseProcess.timestep_at (to 6
        decimals, so a step meant to lie on an interval's end is not moved across it by float rounding)."""
        return round(float(t) / self.scheduler.num_train_timesteps, 6)

    def step(self, prediction: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor | None, x: torch.Tensor):
        raise NotImplementedError

    def arrival(self, t: torch.Tensor, t_next: torch.Tensor | None) -> float:
        """The time one step from `t` lands on (what `marginal` takes)."""
        raise NotImplementedError

    def marginal(self, time: float) -> tuple[float, float]:
        """(a, b) of the forward process at `time`: x_time = a x_0 + b eps (a = 1, b = 0 when clean)."""
        raise NotImplementedError

    def renoise(self, x: torch.Tensor, time_from: float, time_to: float, noise: torch.Tensor) -> torch.Tensor:
        """x at `time_from` taken forward to the noisier `time_to` with fresh `noise` (RePaint's jump back)."""
        a_from, b_from = self.marginal(time_from)
        a_to, b_to = self.marginal(time_to)
        ratio = a_to / a_from
        return ratio * x + max(b_to**2 - (ratio * b_from) ** 2, 0.0) ** 0.5 * noise


class DDIMTrajectory(Trajectory):
    def model_time(self, t: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
        return t.expand(n).to(device)

    def step(self, prediction, t, t_next, x):
        return self.scheduler.step(prediction, int(t), x)[0]

    def arrival(self, t, t_next) -> float:
        return float(int(t) - self.scheduler.num_train_timesteps // self.scheduler.num_inference_steps)

    def marginal(self, time: float) -> tuple[float, float]:
        alpha = self.scheduler.alphas_cumprod[int(time)] if time >= 0 else self.scheduler.final_alpha_cumprod
        return float(alpha) ** 0.5, float(1.0 - alpha) ** 0.5


class EulerTrajectory(Trajectory):
    def step(self, prediction, t, t_next, x):
        return self.scheduler.step(prediction, float(t), x, float(t_next))[0]

    def arrival(self, t, t_next) -> float:
        return float(t_next)

    def marginal(self, time: float) -> tuple[float, float]:
        s = time / self.scheduler.num_train_timesteps   # MONAI's rectified flow: x_t = (1 - s) x_0 + s eps
        return 1.0 - s, s


class DDPM(NoiseProcess):
    name, sampler, timestep_dtype = "ddpm", "ddim", torch.long

    def training_scheduler(self):
        return DDPMScheduler(self.cfg.train_timesteps, schedule=self.cfg.beta_schedule, prediction_type=self.cfg.prediction)

    def sample_timesteps(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Integers in [0, T)."""
        return torch.randint(0, self.num_train_timesteps, (batch,), generator=generator)

    def timestep_at(self, fraction: float) -> int:
        return int(fraction * self.num_train_timesteps)

    def target(self, x0, noise, t):
        return self.scheduler.get_velocity(x0, noise, t) if self.cfg.prediction == "v_prediction" else noise

    def trajectory(self, steps, shape, clip, device) -> Trajectory:
        scheduler = DDIMScheduler(self.cfg.train_timesteps, schedule=self.cfg.beta_schedule,
                                  prediction_type=self.cfg.prediction, clip_sample=clip)
        scheduler.set_timesteps(steps, device=device)
        return DDIMTrajectory(scheduler, [(t, None) for t in scheduler.timesteps], self.timestep_dtype)


class RectifiedFlow(NoiseProcess):
    name, sampler, timestep_dtype = "rflow", "rflow-euler", torch.float32

    def training_scheduler(self):
        return RFlowScheduler(self.cfg.train_timesteps, use_discrete_timesteps=False)

    def sample_timesteps(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Reals in (0, T): uniform, or logit-normal (more weight on mid-range noise levels, as SD3)."""
        T = self.num_train_timesteps
        if self.cfg.timestep_sampling == "logit-normal":
            return torch.sigmoid(torch.randn(batch, generator=generator)) * T
        return torch.rand(batch, generator=generator) * T

    def timestep_at(self, fraction: float) -> float:
        return fraction * self.num_train_timesteps

    def target(self, x0, noise, t):
        return x0 - noise

    def trajectory(self, steps, shape, clip, device) -> Trajectory:
        scheduler = self.training_scheduler()
        scheduler.set_timesteps(steps, device=device, input_img_size_numel=int(torch.tensor(shape[1:]).prod()))
        times = list(scheduler.timesteps) + [torch.tensor(0.0, device=device)]
        return EulerTrajectory(scheduler, list(zip(times[:-1], times[1:])), self.timestep_dtype)


PROCESSES: dict[str, type[NoiseProcess]] = {"rflow": RectifiedFlow, "ddpm": DDPM}


def noise_process(cfg: DiffusionConfig) -> NoiseProcess:
    """The process a diffusion config names (the config refuses unknown names when it is loaded)."""
    return PROCESSES[cfg.process](cfg)
