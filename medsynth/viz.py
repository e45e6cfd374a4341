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


def save_grid(path: str | Path, images: np.ndarray, titles: Sequence[str], masks: np.ndarray | None = None,
              columns: int = 8, vmin: float = -1.0, vmax: float = 1.0) -> Path:
    """PNG grid of images (N, C, *spatial), first channel, with label contours when `masks` (N, *spatial) is given."""
    n = images.shape[0]
    cols = min(columns, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(middle_slice(images[k, 0]).T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax)
        if masks is not None:
            label = middle_slice(masks[k]).T
            if label.max() > 0:
                ax.contour(label, levels=np.arange(0.5, label.max() + 0.5), linewidths=0.6, cmap="autumn")
        ax.set_title(titles[k], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
