"""Planted copies: known, changed copies of training studies, to measure whether the audit finds them.

The copies form a ladder: each kind of change (shift, rotation, warp, blur with noise, ...) at rungs of growing
strength, so a report says not only whether copies are found but how far a copy may drift before it is missed.
Each copy draws its free parameters (direction, plane, noise) from the generator, then applies a deterministic
transform. Volumes are in model units ([-1, 1], background -1); `fill` is the value shifted-in or rotated-in
voxels take.

A mask-conditioned audit adds the `mismatched` rung: a training image with another training study's label map
beside it (a model that memorises an image need not obey the mask it was asked for).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Rung:
    """One kind of change at one strength."""

    kind: str
    strength: float = 0.0      # shift: voxels; rotation: degrees; elastic: voxels; noise: share of the range
    blur: float = 0.0          # blur_noise: Gaussian sigma in voxels before the noise

    @property
    def name(self) -> str:
        if self.kind == "blur_noise":
            return f"blur{self.blur:g}_noise{100 * self.strength:g}"
        if self.kind in ("shift", "rotation", "elastic"):
            return f"{self.kind}{self.strength:g}"
        return self.kind


LADDER = (
    Rung("exact"), Rung("flip"),
    Rung("shift", 1), Rung("shift", 2), Rung("shift", 3),
    Rung("rotation", 5), Rung("rotation", 10),
    Rung("noise", 0.05), Rung("intensity"),
    Rung("elastic", 1.5), Rung("elastic", 3),
    Rung("blur_noise", 0.025, blur=1), Rung("blur_noise", 0.05, blur=1),
    Rung("blur_noise", 0.025, blur=2), Rung("blur_noise", 0.05, blur=2),
)
MISMATCHED = Rung("mismatched")
RUNGS = {r.name: r for r in (*LADDER, MISMATCHED)}
KINDS = tuple(dict.fromkeys(r.kind for r in LADDER))


def ladder(masked: bool) -> tuple[Rung, ...]:
    """The rungs an audit plants: the ladder, and for mask-conditioned sets the mismatched copy too."""
    return (*LADDER, MISMATCHED) if masked else LADDER


def plant_copy(volume: np.ndarray, rung: Rung | str, rng: np.random.Generator, fill: float = -1.0) -> tuple[np.ndarray, dict]:
    """A changed copy of `volume` at the given rung (or rung name), and the parameters drawn for it.

    `mismatched` returns the image unchanged: what changes is the label map it is judged under (the caller's)."""
    r = RUNGS[rung] if isinstance(rung, str) else rung
    x = np.asarray(volume, np.float64)
    if r.kind in ("exact", "mismatched"):
        return x.copy(), {}
    if r.kind == "flip":
        axis = int(rng.integers(x.ndim))
        return np.flip(x, axis).copy(), {"axis": axis}
    if r.kind == "shift":  # `strength` voxels along every axis, either way
        shift = rng.choice([-1, 1], x.ndim) * int(r.strength)
        return ndimage.shift(x, shift, order=0, mode="constant", cval=fill), {"shift": shift.tolist()}
    if r.kind == "rotation":  # `strength` degrees (either way) in one random plane
        degrees = float(rng.choice([-1, 1]) * r.strength)
        plane = tuple(rng.choice(x.ndim, 2, replace=False).tolist())
        return ndimage.rotate(x, degrees, axes=plane, reshape=False, order=1, mode="constant", cval=fill), \
            {"degrees": degrees, "plane": plane}
    if r.kind == "noise":  # Gaussian noise, sigma a share of the intensity range
        sigma = r.strength * float(np.ptp(x))
        return x + rng.normal(0.0, sigma, x.shape), {"sigma": sigma}
    if r.kind == "intensity":  # gain and offset
        gain, offset = float(rng.uniform(0.8, 1.2)), float(rng.uniform(-0.1, 0.1))
        return x * gain + offset, {"gain": gain, "offset": offset}
    if r.kind == "elastic":  # smooth displacement of up to `strength` voxels
        coords = np.indices(x.shape).astype(float)
        for axis in range(x.ndim):
            field = ndimage.gaussian_filter(rng.standard_normal(x.shape), 4.0)
            coords[axis] += r.strength * field / max(np.abs(field).max(), 1e-8)
        return ndimage.map_coordinates(x, coords, order=1, mode="nearest"), {"max_voxels": r.strength}
    if r.kind == "blur_noise":  # "regenerated-like": smoothed, then noised
        sigma = r.strength * float(np.ptp(x))
        return ndimage.gaussian_filter(x, r.blur) + rng.normal(0.0, sigma, x.shape), {"blur_voxels": r.blur, "sigma": sigma}
    raise ValueError(f"unknown planted-copy kind {r.kind!r}; known: {', '.join(RUNGS)}")
