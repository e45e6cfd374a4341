"""Inpainting with a trained conditional model: RePaint (Lugmayr et al., CVPR 2022) on either noise process.

At every sampling step the region to keep is replaced by the real image brought to that step's noise level
(a x_0 + b eps, the forward process's marginal), so the model only invents the edit region and sees real context
around it. With `resample` R > 1, each step is taken R times: after a step the whole image is noised back to the
step's start with fresh noise and the step is taken again, which lets the invented region agree with its real
surroundings (RePaint's resampling with jump length 1). Every random draw of study k comes from its own generator,
so an edit depends on its seed and not on the batch it was made in.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medsynth.conditioning import Conditions
from medsynth.diffusion.process import NoiseProcess
from medsynth.diffusion.sampling import guided, initial_noise


def fresh_noise(shape: Sequence[int], generators: Sequence[torch.Generator], device: torch.device) -> torch.Tensor:
    return initial_noise(shape, generators).to(device)


@torch.no_grad()
def inpaint(model: nn.Module, process: NoiseProcess, known: torch.Tensor, keep: torch.Tensor,
            generators: Sequence[torch.Generator], cond: Conditions, steps: int, guidance: float, resample: int = 1,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Fill the region where `keep` is 0.

    Args:
        known: (N, C, *spatial) the real images in the model's [-1, 1].
        keep: (N, 1, *spatial) 1 where the real image stays, 0 where the model paints (values between blend).
        generators: one per row; they draw the starting noise and every later draw of that row.
        resample: passes per step (1: plain RePaint replacement, no jumps back).

    Returns (N, C, *spatial) on the CPU in [-1, 1], equal to `known` where `keep` is 1.
    """
    device = torch.device(device)
    shape, n = tuple(known.shape[1:]), known.shape[0]
    known, keep, cond = known.to(device), keep.to(device).to(known.dtype), cond.to(device)
    x = fresh_noise(shape, generators, device)
    trajectory = process.trajectory(steps, shape, True, device)
    last = len(trajectory.pairs) - 1
    for i, (t, t_next) in enumerate(trajectory.pairs):
        start, arrival = float(t), trajectory.arrival(t, t_next)
        passes = resample if i < last else 1      # the last step lands on clean data: nothing to jump back from
        for r in range(passes):
            out = guided(model, x, trajectory.model_time(t, n, device), cond, guidance)
            x = trajectory.step(out, t, t_next, x)
            a, b = trajectory.marginal(arrival)
            x = keep * (a * known + b * fresh_noise(shape, generators, device)) + (1.0 - keep) * x
            if r + 1 < passes:
                x = trajectory.renoise(x, arrival, start, fresh_noise(shape, generators, device))
    x = keep * known + (1.0 - keep) * x.clamp(-1.0, 1.0)
    return x.float().cpu()
