"""Geometry of an edit: a patch of the model's grid cut out of a study of any size, and the way back.

Positions are taken in a physical frame: RAS world coordinates in mm (the study's affine; for 2D studies its
in-plane part, as preprocessing orients them), so a patch is an axis-aligned RAS box at the model's spacing whatever
the study's orientation or obliquity: the view the model was trained in. A 2D study whose in-plane axes are not
independent in the affine's first two world axes (a coronal slice, say) falls back to its own index axes scaled to
mm. The patch is what the model sees (its training grid's shape and spacing); only the voxels of the edit region ever
go back to the study.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medsynth.data.geometry import spacing_from_affine


@dataclass(frozen=True)
class Frame:
    """Study voxel indices <-> physical positions (mm)."""

    affine: np.ndarray
    dims: int

    @property
    def spacing(self) -> np.ndarray:
        return np.asarray(spacing_from_affine(self.affine, self.dims))

    @property
    def oriented(self) -> bool:
        """Whether positions follow the affine (3D, and 2D with an invertible in-plane part) or the index axes."""
        return self.dims == 3 or abs(np.linalg.det(self.affine[:2, :2])) > 1e-6 * float(np.prod(self.spacing))

    def to_phys(self, index: np.ndarray) -> np.ndarray:
        """(dims, M) voxel indices -> (dims, M) positions."""
        if self.oriented:
            return self.linear() @ index + self.affine[: self.dims, 3:4]
        return index * self.spacing[:, None]

    def to_index(self, phys: np.ndarray) -> np.ndarray:
        if self.oriented:
            return np.linalg.solve(self.linear(), phys - self.affine[: self.dims, 3:4])
        return phys / self.spacing[:, None]

    def linear(self) -> np.ndarray:
        """The (dims, dims) map from index steps to physical steps."""
        return self.affine[: self.dims, : self.dims] if self.oriented else np.diag(self.spacing)


@dataclass(frozen=True)
class PatchGrid:
    """A box of `shape` voxels at `spacing` mm, axis-aligned in the study's physical frame, centred at `centre`."""

    frame: Frame
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    centre: np.ndarray            # (dims,) physical position of the patch centre

    def patch_to_phys(self, q: np.ndarray) -> np.ndarray:
        half = (np.asarray(self.shape, float) - 1) / 2.0
        return self.centre[:, None] + np.asarray(self.spacing)[:, None] * (q - half[:, None])

    def phys_to_patch(self, phys: np.ndarray) -> np.ndarray:
        half = (np.asarray(self.shape, float) - 1) / 2.0
        return (phys - self.centre[:, None]) / np.asarray(self.spacing)[:, None] + half[:, None]

    def study_coords(self) -> np.ndarray:
        """(dims, *shape) study voxel coordinates of every patch voxel."""
        q = np.indices(self.shape, dtype=float).reshape(len(self.shape), -1)
        return self.frame.to_index(self.patch_to_phys(q)).reshape(len(self.shape), *self.shape)

    def fits(self, index: np.ndarray, border: int = 2) -> bool:
        """Whether study voxels (dims, M) lie inside the patch, `border` voxels in from its edges."""
        q = self.phys_to_patch(self.frame.to_phys(index.astype(float)))
        upper = np.asarray(self.shape, float)[:, None] - 1 - border
        return bool(np.all(q >= border) and np.all(q <= upper))

    def take(self, volume: np.ndarray, order: int, cval: float | None = None) -> np.ndarray:
        """A study array (*spatial) or (C, *spatial) resampled onto the patch: linear for images (edge values past
        the study's border), nearest for label maps (background past the border, `cval`). Only the block of the
        study under the patch is read, so a large study costs no more than its patch."""
        coords = self.study_coords()
        if volume.ndim == len(self.shape) + 1:
            return np.stack([self.take(channel, order, cval) for channel in volume])
        size = np.asarray(volume.shape)
        lo = np.clip(np.floor(coords.reshape(len(size), -1).min(1)).astype(int) - 1, 0, size - 1)
        hi = np.clip(np.ceil(coords.reshape(len(size), -1).max(1)).astype(int) + 2, lo + 1, size)
        block = volume[tuple(slice(a, b) for a, b in zip(lo, hi))]
        local = coords - lo.reshape(-1, *([1] * len(self.shape)))
        values = ndimage.map_coordinates(np.asarray(block, np.float64 if order else block.dtype), local, order=order,
                                         mode="nearest")
        if cval is None:
            return values
        past = (coords < -0.5) | (coords > (size - 0.5).reshape(-1, *([1] * len(self.shape))))   # beyond the study
        return np.where(np.any(past, axis=0), cval, values)

    def give(self, patch: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Patch values (C, *shape) at study voxels `index` (dims, M), linear: (C, M)."""
        q = self.phys_to_patch(self.frame.to_phys(index.astype(float)))
        return np.stack([ndimage.map_coordinates(np.asarray(c, np.float64), q, order=1, mode="nearest") for c in patch])


def patch_around(frame: Frame, region: np.ndarray, shape: tuple[int, ...], spacing: tuple[float, ...]) -> PatchGrid:
    """The patch centred on the bounding box of `region` (a boolean study array), in physical space."""
    phys = frame.to_phys(np.argwhere(region).T.astype(float))
    centre = (phys.min(axis=1) + phys.max(axis=1)) / 2.0
    return PatchGrid(frame, tuple(int(s) for s in shape), tuple(float(s) for s in spacing), centre)


def distance_mm(region: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Each voxel's distance (mm) to the nearest voxel of `region` (0 inside)."""
    return ndimage.distance_transform_edt(~region, sampling=spacing)
