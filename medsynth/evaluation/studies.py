"""Study sets as the evaluation handles them: arrays on the model grid, and the slices a 2D feature space sees."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}


@dataclass
class StudySet:
    """Studies on the model grid: images (N, C, *spatial) in model units, label maps, class ids."""

    images: np.ndarray
    labels: np.ndarray | None
    classes: np.ndarray | None     # index into the run's class names
    conditions: dict[str, list] | None = None   # extra condition columns' raw values (requested, for synthetic)

    def subset(self, index: np.ndarray) -> StudySet:
        """The studies at `index` (conditions left out)."""
        return StudySet(self.images[index], None if self.labels is None else self.labels[index],
                        None if self.classes is None else self.classes[index])


def plane_slices(images: np.ndarray, axis: int | None, count: int) -> np.ndarray:
    """(N, C, *spatial) -> (N * k, C, a, b): k evenly spaced slices across the central 60% along `axis` (3D);
    2D images pass through."""
    if axis is None:
        return images
    size = images.shape[2 + axis]
    index = np.unique(np.linspace(0.2 * size, 0.8 * size - 1, count).round().astype(int))
    taken = np.moveaxis(np.take(images, index, axis=2 + axis), 2 + axis, 1)
    return taken.reshape(-1, *taken.shape[2:])
