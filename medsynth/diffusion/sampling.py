"""Sampling: the process's trajectory (DDIM for DDPM, Euler steps for rectified flow) with classifier-free guidance.

Each sample has its own random generator, so sample k depends only on its seed, whatever the batch size.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medsynth.conditioning import Conditions
from medsynth.diffusion.process import NoiseProcess


def initial_noise(shape: Sequence[int], generators: Sequence[torch.Generator]) -> torch.Tensor:
    """(N, *shape) standard normal noise, row k drawn from generators[k] (on CPU, so devices agree)."""
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])


def guided(model: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditions, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + w (cond - uncond), both in one batch; plain prediction when w == 1."""
    if cond.empty or guidance == 1.0:
        return model(x, t, cond)
    n = x.shape[0]
    out = model(torch.cat([x, x]), torch.cat([t, t]), cond.cat(cond.null(model.null_class)))
    conditional, unconditional = out[:n], out[n:]
    return unconditional + guidance * (conditional - unconditional)


@torch.no_grad()
def sample(model: nn.Module, process: NoiseProcess, shape: Sequence[int], generators: Sequence[torch.Generator],
           cond: Conditions, steps: int, guidance: float, device: torch.device | str = "cpu",
           clip: bool = True) -> torch.Tensor:
    """Draw len(generators) samples of `shape` (C, *spatial) under `cond`; returns (N, C, *spatial) on the CPU, clipped
    to [-1, 1] unless `clip` is off (latents, which have unit variance, not a range). `steps` and `guidance` are the
    caller's resolved settings (generation fills them from the run's config once)."""
    device = torch.device(device)
    x = initial_noise(shape, generators).to(device)
    n = x.shape[0]
    cond = cond.to(device)
    trajectory = process.trajectory(steps, shape, clip, device)
    for t, t_next in trajectory.pairs:
        out = guided(model, x, trajectory.model_time(t, n, device), cond, guidance)
        x = trajectory.step(out, t, t_next, x)
    return (x.clamp(-1.0, 1.0) if clip else x).float().cpu()
