"""Sampling: DDIM (for DDPM-trained models) or rectified-flow Euler steps, with classifier-free guidance.

Each sample has its own random generator, so sample k depends only on its seed, whatever the batch size.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.schedulers import DDIMScheduler, RFlowScheduler

from medsynth.config import DiffusionConfig
from medsynth.models import Denoiser


def initial_noise(shape: Sequence[int], generators: Sequence[torch.Generator]) -> torch.Tensor:
    """(N, *shape) standard normal noise, row k drawn from generators[k] (on CPU, so devices agree)."""
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])


def guided(model: Denoiser, x: torch.Tensor, t: torch.Tensor, class_labels, mask, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + w (cond - uncond), both in one batch; plain prediction when w == 1."""
    conditioned = class_labels is not None or mask is not None
    if not conditioned or guidance == 1.0:
        return model(x, t, class_labels, mask)
    n = x.shape[0]
    null_class = torch.full_like(class_labels, model.null_class) if class_labels is not None else None
    both_class = torch.cat([class_labels, null_class]) if class_labels is not None else None
    both_mask = torch.cat([mask, torch.zeros_like(mask)]) if mask is not None else None
    out = model(torch.cat([x, x]), torch.cat([t, t]), both_class, both_mask)
    cond, uncond = out[:n], out[n:]
    return uncond + guidance * (cond - uncond)


@torch.no_grad()
def sample(
    model: Denoiser,
    cfg: DiffusionConfig,
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    class_labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    device: torch.device | str = "cpu",
    clip: bool = True,
) -> torch.Tensor:
    """Draw len(generators) samples of `shape` (C, *spatial); returns (N, C, *spatial) on the CPU, clipped to [-1, 1]
    unless `clip` is off (latents, which have unit variance, not a range)."""
    steps = steps or cfg.sample_steps
    guidance = cfg.guidance if guidance is None else guidance
    device = torch.device(device)
    x = initial_noise(shape, generators).to(device)
    n = x.shape[0]
    class_labels = class_labels.to(device) if class_labels is not None else None
    mask = mask.to(device) if mask is not None else None
    if cfg.process == "ddpm":
        scheduler = DDIMScheduler(cfg.train_timesteps, schedule=cfg.beta_schedule, prediction_type=cfg.prediction, clip_sample=clip)
        scheduler.set_timesteps(steps, device=device)
        for t in scheduler.timesteps:
            out = guided(model, x, t.expand(n).to(device), class_labels, mask, guidance)
            x, _ = scheduler.step(out, int(t), x)
    else:
        scheduler = RFlowScheduler(cfg.train_timesteps, use_discrete_timesteps=False)
        scheduler.set_timesteps(steps, device=device, input_img_size_numel=int(torch.tensor(shape[1:]).prod()))
        times = list(scheduler.timesteps) + [torch.tensor(0.0, device=device)]
        for t, t_next in zip(times[:-1], times[1:]):
            out = guided(model, x, t.float().expand(n).to(device), class_labels, mask, guidance)
            x, _ = scheduler.step(out, float(t), x, float(t_next))
    return (x.clamp(-1.0, 1.0) if clip else x).float().cpu()
