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


def save_edit_grid(path: str | Path, rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, str]]) -> Path:
    """One row per edit: the real slice, the edited slice with the lesion's contour, and their difference.

    rows: (before 2D, after 2D, lesion 2D bool, title) in physical units, shown on the real slice's 1st-99th
    percentiles."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(6.0, 2.1 * len(rows)), squeeze=False)
    for (before, after, lesion, title), (a, b, c) in zip(rows, axes):
        vmin, vmax = np.percentile(before, [1, 99]) if before.size else (0.0, 1.0)
        spread = float(np.abs(after - before).max()) or 1.0
        a.imshow(before.T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax)
        b.imshow(after.T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax)
        if lesion.any():
            b.contour(lesion.T.astype(float), levels=[0.5], linewidths=0.8, colors="orange")
        c.imshow((after - before).T, cmap="coolwarm", origin="lower", vmin=-spread, vmax=spread)
        for ax, name in ((a, f"{title}: real"), (b, "edited, lesion contour"), (c, "difference")):
            ax.set_title(name, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def spread_by_class(classes: list, limit: int = 16) -> list[int]:
    """Positions of up to `limit` items, as many of each class as fit (in order): what an overview grid shows, so that
    every class asked for appears, not only the first."""
    per_class = max(1, limit // max(1, len(set(classes))))
    picked, seen = [], {}
    for k, c in enumerate(classes):
        if len(picked) < limit and seen.get(c, 0) < per_class:
            picked.append(k)
            seen[c] = seen.get(c, 0) + 1
    return picked
