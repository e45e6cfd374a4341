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


def without(cond: Conditions, part: str | int, null_class: int) -> Conditions:
    """`cond` with one condition left out: "class" (the null class) or extra column `part` (NaN)."""
    if part == "class":
        return cond.replace(classes=torch.full_like(cond.classes, null_class))
    extra = cond.extra.clone()
    extra[:, part] = float("nan")
    return cond.replace(extra=extra)


def call(model: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditions) -> torch.Tensor:
    """One model call. A lone 3D row on the CPU is run as a pair and the copy dropped: for a batch of one PyTorch
    picks its reference 3D convolution over oneDNN whenever N * C * D * H <= 20,480 (the deeper levels of a 32^3
    model), and two rows through oneDNN cost less than one through the reference path (scripts/bench_lone_row.py)."""
    if x.shape[0] != 1 or x.ndim != 5 or x.device.type != "cpu":
        return model(x, t, cond)
    return model(x.repeat(2, 1, 1, 1, 1), t.repeat(2), cond.cat(cond))[:1]


def guided(model: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditions, guidance: float,
           per: dict | None = None) -> torch.Tensor:
    """Classifier-free guidance: uncond + w (cond - uncond), all in one batch; plain prediction when w == 1 and no
    per-condition scale. `per` ({"class" or extra column index: w_i}) adds (w_i - 1) (cond - cond without i) for
    each, so one condition is pushed harder (w_i > 1) or softer (w_i < 1) than the joint scale gives it."""
    per = {k: w for k, w in (per or {}).items() if w != 1.0}
    if cond.empty or guidance == 1.0 and not per:
        return call(model, x, t, cond)
    n, parts = x.shape[0], list(per)
    batch = cond.cat(cond.null(model.null_class))
    for part in parts:
        batch = batch.cat(without(cond, part, model.null_class))
    out = model(x.repeat(2 + len(parts), *[1] * (x.ndim - 1)), t.repeat(2 + len(parts)), batch)
    conditional, unconditional = out[:n], out[n : 2 * n]
    result = unconditional + guidance * (conditional - unconditional)
    for k, part in enumerate(parts):
        result = result + (per[part] - 1.0) * (conditional - out[(2 + k) * n : (3 + k) * n])
    return result


@torch.no_grad()
def sample(model: nn.Module, process: NoiseProcess, shape: Sequence[int], generators: Sequence[torch.Generator],
           cond: Conditions, steps: int, guidance: float, device: torch.device | str = "cpu",
           clip: bool = True, per: dict | None = None, interval: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Draw len(generators) samples of `shape` (C, *spatial) under `cond`; returns (N, C, *spatial) on the CPU, clipped
    to [-1, 1] unless `clip` is off (latents, which have unit variance, not a range). `steps` and `guidance` are the
    caller's resolved settings (generation fills them from the run's config once); `per`, per-condition scales
    (guided). Guidance (and `per`) applies only at steps whose noise fraction f lies in `interval` (0 clean, 1 pure
    noise): start < f <= end, as the paper's sigma interval (a start of 0 takes in f = 0 too); elsewhere the step takes the plain conditional prediction (Kynkaanniemi et al. 2024,
    "Applying guidance in a limited interval": guidance early costs variety, late it costs fine texture)."""
    device = torch.device(device)
    x = initial_noise(shape, generators).to(device)
    n = x.shape[0]
    cond = cond.to(device)
    trajectory = process.trajectory(steps, shape, clip, device)
    lo, hi = interval
    for t, t_next in trajectory.pairs:
        f = trajectory.noise_fraction(t)
        on = (lo < f or lo == 0) and f <= hi
        out = guided(model, x, trajectory.model_time(t, n, device), cond, guidance if on else 1.0, per if on else None)
        x = trajectory.step(out, t, t_next, x)
    return (x.clamp(-1.0, 1.0) if clip else x).float().cpu()
