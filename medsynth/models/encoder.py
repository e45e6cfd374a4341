"""A small contrastive (SimCLR) encoder trained on training studies: the audit's embedding channel and the evaluation's
feature space (Dar et al. use SimCLR features to find copies).

Two augmented views of a study (axis flips, shifts of up to 2 voxels, gain/offset, noise, blur) must map close
together and away from other studies, so the embedding ignores exactly the changes a disguised copy would make.
Any other extractor fits: `embed` only needs a callable from (B, C, *spatial) tensors to (B, D) features.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import Classifier

from medsynth.progress import progress_iter


def build_encoder(in_shape: tuple[int, ...], dim: int = 64) -> torch.nn.Module:
    return Classifier(in_shape=in_shape, classes=dim, channels=(16, 32, 64), strides=(2, 2, 2), num_res_units=1)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random view of each study in the batch (model units)."""
    views = []
    for v in x:
        axes = [a + 1 for a in range(v.ndim - 1) if torch.rand(1, generator=g) < 0.5]
        v = v.flip(axes) if axes else v
        shifts = torch.randint(-2, 3, (v.ndim - 1,), generator=g).tolist()
        v = torch.roll(v, shifts, dims=list(range(1, v.ndim)))
        gain, offset = 0.8 + 0.4 * torch.rand(1, generator=g), 0.2 * torch.rand(1, generator=g) - 0.1
        v = v * gain + offset + 0.1 * torch.rand(1, generator=g) * torch.randn(v.shape, generator=g)
        if torch.rand(1, generator=g) < 0.3:  # a light blur
            kernel = torch.ones((1, 1) + (3,) * (v.ndim - 1)) / 3 ** (v.ndim - 1)
            conv = F.conv3d if v.ndim == 4 else F.conv2d
            v = torch.cat([conv(c[None, None], kernel, padding=1)[0] for c in v])
        views.append(v)
    return torch.stack(views)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = len(a)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, target)


def train_encoder(volumes: np.ndarray, steps: int = 150, batch_size: int = 16, temperature: float = 0.2,
                  seed: int = 0, show_progress: bool = True) -> torch.nn.Module:
    """Train on (N, C, *spatial) float32 volumes; returns the encoder in eval mode (CPU)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(volumes, np.float32))
    model = build_encoder(tuple(x_all.shape[1:]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    for _ in progress_iter(range(steps), "audit encoder", enabled=show_progress):
        index = torch.randperm(len(x_all), generator=g)[: min(batch_size, len(x_all))]
        x = x_all[index]
        loss = nt_xent(model(augment(x, g)), model(augment(x, g)), temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def embed(model, volumes: np.ndarray, flips: bool = False, batch_size: int = 64) -> np.ndarray:
    """(N, D) unit-norm embeddings; with `flips`, (N, 2^dims, D): one row per combination of axis flips."""
    x_all = torch.from_numpy(np.ascontiguousarray(volumes, np.float32))
    dims = x_all.ndim - 2
    combos = [a for r in range(dims + 1) for a in itertools.combinations(range(2, 2 + dims), r)] if flips else [()]
    out = []
    for start in range(0, len(x_all), batch_size):
        x = x_all[start : start + batch_size]
        out.append(torch.stack([F.normalize(model(x.flip(c) if c else x), dim=1) for c in combos], 1))
    z = torch.cat(out).numpy()
    return z if flips else z[:, 0]
