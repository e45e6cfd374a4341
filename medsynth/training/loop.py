"""One training step, shared by the diffusion loop and the ControlNet loop: the batch draw (with condition dropout),
the loss, the clipped optimiser step, the learning-rate factor, the EMA, and the metrics log."""

from __future__ import annotations

import csv
import math
import time
from collections import deque
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsynth.conditioning import Conditions
from medsynth.config import Config
from medsynth.diffusion import NoiseProcess
from medsynth.runtime import seeded_generator


class Batch(NamedTuple):
    """Clean images x0 (B, C, *spatial), noise like them, timesteps (B,), and the batch's conditions."""

    x0: torch.Tensor
    noise: torch.Tensor
    t: torch.Tensor
    cond: Conditions


class Optimisation(NamedTuple):
    """What a training step updates: the trained module, its EMA copy, the optimiser and its LR schedule."""

    trained: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The random stream of one training step: batch k depends only on (seed, step, rank), so resume is exact."""
    return seeded_generator(seed, step, rank)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def optimisation(trained: nn.Module, ema: nn.Module, lr: float, weight_decay: float, warmup: int,
                 total: int) -> Optimisation:
    """AdamW on `trained`'s trainable parameters with linear warm-up then cosine decay over `total` steps."""
    optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total))
    return Optimisation(trained, ema, optimizer, scheduler)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, step: int, decay: float) -> None:
    """EMA with warm-up, decay min(decay, (1 + step) / (10 + step)), so short runs are not dominated by init."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - d)


def draw_batch(ts, cfg: Config, process: NoiseProcess, g: torch.Generator, null_class: int,
               index: torch.Tensor | None = None) -> Batch:
    """A batch of the training set `ts` with condition dropout for guidance: a dropped class becomes the null class,
    a dropped mask all zeros. The randoms are drawn in a fixed order (index, noise, t, class drop, mask drop, flips),
    so runs without flips keep their random stream. `index` gives the rows instead (a private run's Poisson draw)."""
    if index is None:
        index = torch.randint(0, len(ts), (cfg.train.batch_size,), generator=g)
    x0 = ts.images[index]
    noise = torch.randn(x0.shape, generator=g)
    t = process.sample_timesteps(x0.shape[0], g)
    classes = mask = None
    if ts.classes is not None:
        classes = ts.classes[index].clone()
        classes[torch.rand(len(index), generator=g) < cfg.conditioning.class_dropout] = null_class
    if ts.labels is not None:
        mask = ts.one_hot(index)
        keep = torch.rand(len(index), generator=g) >= cfg.conditioning.mask_dropout
        mask *= keep.view(-1, *([1] * (mask.ndim - 1)))
    for axis in cfg.train.flip_axes:
        flip = (torch.rand(len(index), generator=g) < 0.5).view(-1, *([1] * (x0.ndim - 1)))
        x0 = torch.where(flip, x0.flip(2 + axis), x0)
        if mask is not None:
            mask = torch.where(flip, mask.flip(2 + axis), mask)
    return Batch(x0, noise, t, Conditions(classes, mask, extra_dropped(ts, index, classes, null_class, cfg, g)))


def extra_dropped(ts, index: torch.Tensor, classes: torch.Tensor | None, null_class: int, cfg: Config,
                  g: torch.Generator) -> torch.Tensor | None:
    """The batch's extra conditions with dropout: all left out (NaN) where the class was dropped (or, without a class,
    with probability class_dropout), so the unconditional branch is trained; and each one also on its own with
    probability condition_dropout, so guidance works on any subset. Drawn after the other randoms."""
    if ts.extra is None:
        return None
    extra = ts.extra[index].clone()
    c = cfg.conditioning
    every = classes == null_class if classes is not None else torch.rand(len(index), generator=g) < c.class_dropout
    each = torch.rand(extra.shape, generator=g) < c.condition_dropout
    return extra.masked_fill(every[:, None] | each, float("nan"))


def training_step(net: nn.Module, opt: Optimisation, batch: Batch, process: NoiseProcess, cfg: Config, step: int,
                  dev: torch.device, autocast=nullcontext(), channels_last: bool = False, private=None) -> float:
    """One optimisation step: noisy input, prediction by `net`, MSE to the process's target, clipped AdamW step on
    `opt.trained`'s parameters, learning-rate schedule, EMA of `opt.trained` into `opt.ema`. Returns the loss.

    `private` (a training.private.PrivateStep, whose module `net` is) clips each example's gradient and adds noise
    instead of clipping the batch's; an empty Poisson batch takes the noise alone (loss nan)."""
    x0, noise, t, cond = batch
    (private or opt.optimizer).zero_grad(set_to_none=True)
    loss = torch.tensor(float("nan"))
    if len(x0):
        x_t, target, t = process.noisy(x0, noise, t).to(dev), process.target(x0, noise, t).to(dev), t.to(dev)
        if channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last_3d if x_t.ndim == 5 else torch.channels_last)
        with autocast:
            prediction = net(x_t, t, cond.to(dev))
        loss = F.mse_loss(prediction.float(), target)
        loss.backward()
    if private is None:
        torch.nn.utils.clip_grad_norm_(opt.trained.parameters(), cfg.train.grad_clip)
        opt.optimizer.step()
    else:
        private.step()
    opt.scheduler.step()
    ema_update(opt.ema, opt.trained, step, cfg.train.ema_decay)
    return loss.item()


class MetricsLog:
    """metrics.csv (step, loss, lr, samples_per_s, elapsed_s), appended every log interval."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled, self.rows = path, enabled, []
        self.start = self.window_start = time.monotonic()
        self.window_samples, self.last_loss, self.samples_per_s = 0, float("nan"), 0.0
        self.losses: deque[float] = deque(maxlen=20)  # the window last_loss averages
        self.continue_from(path)

    def continue_from(self, path: Path) -> None:
        """A resumed run reports from its own history until new steps come (a finished one then says its last loss,
        not nan)."""
        if not path.is_file():
            return
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))[-20:]
        if rows:
            self.losses.extend(float(r["loss"]) for r in rows)
            self.last_loss, self.samples_per_s = float(np.mean(self.losses)), float(rows[-1]["samples_per_s"])

    def add(self, step: int, loss: float, lr: float, samples: int) -> None:
        if not math.isnan(loss):   # a private run's empty batch has no loss
            self.losses.append(loss)
        self.window_samples += samples
        self.last_loss = float(np.mean(self.losses))
        elapsed = time.monotonic() - self.window_start
        if elapsed > 0:
            self.samples_per_s = self.window_samples / elapsed
        self.rows.append((step, loss, lr, self.samples_per_s, time.monotonic() - self.start))

    def flush(self) -> None:
        if not self.enabled or not self.rows:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "loss", "lr", "samples_per_s", "elapsed_s"])
            writer.writerows((s, f"{l:.6f}", f"{r:.3e}", f"{sps:.2f}", f"{e:.1f}") for s, l, r, sps, e in self.rows)
        self.rows = []
        self.window_start, self.window_samples = time.monotonic(), 0
