"""Planted copies: known, mildly changed copies of training studies, to measure whether the audit finds them.

Each kind draws its parameters from the generator, then applies a deterministic transform. Volumes are in
model units ([-1, 1], background -1); `fill` is the value shifted-in or rotated-in voxels take.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

KINDS = ("exact", "flip", "shift", "rotation", "noise", "intensity", "elastic", "blur_noise")


def plant_copy(volume: np.ndarray, kind: str, rng: np.random.Generator, fill: float = -1.0) -> tuple[np.ndarray, dict]:
    """A changed copy of `volume` of the given kind, and the parameters drawn for it."""
    x = np.asarray(volume, np.float64)
    if kind == "exact":
        return x.copy(), {}
    if kind == "flip":
        axis = int(rng.integers(x.ndim))
        return np.flip(x, axis).copy(), {"axis": axis}
    if kind == "shift":  # 1-2 voxels along every axis, either way
        shift = rng.choice([-2, -1, 1, 2], x.ndim)
        return ndimage.shift(x, shift, order=0, mode="constant", cval=fill), {"shift": shift.tolist()}
    if kind == "rotation":  # up to 5 degrees in one plane
        degrees, plane = float(rng.uniform(-5, 5)), tuple(rng.choice(x.ndim, 2, replace=False).tolist())
        return ndimage.rotate(x, degrees, axes=plane, reshape=False, order=1, mode="constant", cval=fill), \
            {"degrees": degrees, "plane": plane}
    if kind == "noise":  # Gaussian noise of 5% of the intensity range
        sigma = 0.05 * float(np.ptp(x))
        return x + rng.normal(0.0, sigma, x.shape), {"sigma": sigma}
    if kind == "intensity":  # gain and offset
        gain, offset = float(rng.uniform(0.8, 1.2)), float(rng.uniform(-0.1, 0.1))
        return x * gain + offset, {"gain": gain, "offset": offset}
    if kind == "elastic":  # smooth displacement of up to 1.5 voxels
        coords = np.indices(x.shape).astype(float)
        for axis in range(x.ndim):
            field = ndimage.gaussian_filter(rng.standard_normal(x.shape), 4.0)
            coords[axis] += 1.5 * field / max(np.abs(field).max(), 1e-8)
        return ndimage.map_coordinates(x, coords, order=1, mode="nearest"), {"max_voxels": 1.5}
    if kind == "blur_noise":  # "regenerated-like": smoothed, then noised
        sigma = 0.025 * float(np.ptp(x))
        return ndimage.gaussian_filter(x, 1.0) + rng.normal(0.0, sigma, x.shape), {"blur_voxels": 1.0, "sigma": sigma}
    raise ValueError(f"unknown planted-copy kind {kind!r}; known: {', '.join(KINDS)}")
