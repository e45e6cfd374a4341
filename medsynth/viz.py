"""Pictures people look at: sample grids (middle slices for 3D) with optional label-map contours."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def middle_slice(volume: np.ndarray) -> np.ndarray:
    """(*spatial) -> 2D: the axial (last-axis) middle slice of a volume, the image itself in 2D."""
    return volume[..., volume.shape[-1] // 2] if volume.ndim == 3 else volume


def draw_study(ax, image: np.ndarray, label: np.ndarray | None = None, title: str = "", fontsize: int = 7,
               vmin: float = -1.0, vmax: float = 1.0) -> None:
    """One study on `ax`: the middle slice of `image` (*spatial), label contours when `label` has any foreground."""
    ax.axis("off")
    ax.imshow(middle_slice(image).T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax)
    if label is not None:
        label = middle_slice(label).T
        if label.max() > 0:
            ax.contour(label, levels=np.arange(0.5, label.max() + 0.5), linewidths=0.6, cmap="autumn")
    ax.set_title(title, fontsize=fontsize)


def save_grid(path: str | Path, images: np.ndarray, titles: Sequence[str], masks: np.ndarray | None = None,
              columns: int = 8, vmin: float = -1.0, vmax: float = 1.0) -> Path:
    """PNG grid of images (N, C, *spatial), first channel, with label contours when `masks` (N, *spatial) is given."""
    n = images.shape[0]
    cols = min(columns, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < n:
            draw_study(ax, images[k, 0], None if masks is None else masks[k], titles[k], vmin=vmin, vmax=vmax)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
