"""Preview grids of EMA samples while a run trains (PNG, middle slices for 3D, mask contours)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medsynth.conditioning import Conditions
from medsynth.config import Config
from medsynth.diffusion import noise_process, sample
from medsynth.models.latent import LatentCodec
from medsynth.viz import save_grid


@torch.no_grad()
def preview(model: nn.Module, cfg: Config, ts, path: Path, step: int, device: torch.device,
            codec: LatentCodec | None = None, n: int = 8) -> None:
    """A PNG grid of samples of `model` from training set `ts` (decoded, for latent runs): classes in turn, masks from
    the first training studies, at the config's sampler steps and guidance. A private run's grid shows no training
    mask (it would put training label maps beside the private weights): its samples take the null mask."""
    model.eval()
    labels = ts.labels if not cfg.train.dp.enabled else None
    n = min(n, len(ts)) if labels is not None else n
    classes = torch.arange(n) % len(ts.class_names) if ts.class_names else None
    mask = ts.one_hot(torch.arange(n)) if labels is not None else None
    images = sample(model, noise_process(cfg.diffusion), ts.images.shape[1:],
                    [torch.Generator().manual_seed(k) for k in range(n)], Conditions(classes, mask),
                    cfg.diffusion.sample_steps, cfg.diffusion.guidance, device=device, clip=codec is None)
    if codec is not None:
        images = codec.decode(images)
    titles = [f"{ts.class_names[int(c)]} @{step}" for c in classes] if classes is not None else [f"@{step}"] * n
    save_grid(path, images.numpy(), titles, labels[:n].numpy() if labels is not None else None)
    model.train()
