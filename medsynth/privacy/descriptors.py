"""Stage 1 of the copy search (medsynth.privacy.search): a plain search over four descriptors per study.

On a grid of at most 32^3 voxels (block means of larger volumes), compared by dot products in memory-bounded chunks:
  - pixel: the z-scored volume (finds noisy, rescaled, rotated, elastically warped and blurred copies);
  - pose: the volume in a canonical pose, its intensity centroid moved to the grid centre and each axis
    flipped so that its third moment is positive (finds flipped copies);
  - spectrum: the log Fourier magnitude symmetrised over axis flips, one orthant (finds shifted copies of noise-like
    texture);
  - tiny: the z-scored volume on a grid of at most 20^3, each query tried at every one-voxel shift of that grid
    (finds copies shifted by a few voxels along every axis, which the others rank low).
A query's candidates are each descriptor's top k. The cost grows with queries x gallery x descriptor length, so a
large gallery (PREVIEW_FROM studies or more) is searched in two tiers: every descriptor also has a preview at an
eighth of its length (block means over 2 voxels per axis), the preview's top `PREVIEW_FACTOR` x k are found for
every query, and only those are scored with the full descriptor, whose top k are kept: about 8x fewer operations,
and the same top k whenever the full top k are among the preview's candidates (a copy and its source agree at the
coarser scale too, where noise and texture average out). The tiny descriptor's preview is searched under shifts
only where a preview voxel is narrower than SHIFT_FREE_SPAN study voxels: the audit's planted shifts reach 3 voxels,
under half such a block.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import fft as sfft

MAX_DESCRIPTOR_VOXELS = 32**3
MAX_SHIFTED_VOXELS = 20**3   # the tiny descriptor, searched under every one-voxel shift of the query
PREVIEW_FROM = 2048          # galleries this large are searched in two tiers
PREVIEW_FACTOR = 4           # preview candidates per query: this many times k
SHIFT_FREE_SPAN = 8          # a preview voxel this many study voxels wide: the tiny preview is searched unshifted
WORKERS = max(1, min(4, os.cpu_count() or 1))   # threads that describe studies and run the exact stage


def zscore(volume: np.ndarray) -> np.ndarray:
    """Zero mean, unit norm (a constant volume becomes zeros)."""
    v = np.asarray(volume, np.float64) - float(np.mean(volume))
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def axis_moment(weights: np.ndarray, axis: int, centre: float, power: int) -> float:
    """sum over voxels of weight x (coordinate along `axis` - centre)^power, from the weights' marginal on that axis."""
    marginal = weights.sum(tuple(a for a in range(weights.ndim) if a != axis))
    return float(marginal @ (np.arange(weights.shape[axis]) - centre) ** power)


def shift_linear(volume: np.ndarray, shift: np.ndarray, cval: float) -> np.ndarray:
    """`volume` moved by `shift` voxels with linear interpolation, `cval` beyond the edges (as ndimage.shift with
    order 1 and mode "grid-constant"), one axis at a time: two slices of a padded copy per axis, 2x faster."""
    x = volume
    for axis, d in enumerate(shift):
        whole = int(np.floor(d))
        frac, n, pad = d - whole, x.shape[axis], abs(whole) + 2
        padded = np.pad(x, [(pad, pad) if a == axis else (0, 0) for a in range(x.ndim)], constant_values=cval)
        take = lambda start: padded[tuple(slice(start, start + n) if a == axis else slice(None) for a in range(x.ndim))]  # noqa: E731
        x = (1 - frac) * take(pad - whole) + frac * take(pad - whole - 1)
    return x


def canonical_pose(volume: np.ndarray) -> np.ndarray:
    """Centroid to the grid centre (linear interpolation), then each axis flipped so its third moment is positive.

    Weights are intensities above the volume's minimum, so background (air, padding) carries none.
    """
    x = np.asarray(volume, np.float64)
    weights = x - x.min()
    centre = (np.array(x.shape) - 1) / 2.0
    total = weights.sum()
    if total > 0:
        centroid = np.array([axis_moment(weights, a, 0.0, 1) for a in range(x.ndim)]) / total
        x = shift_linear(x, centre - centroid, float(x.min()))
    weights = x - x.min()
    for axis in range(x.ndim):
        if axis_moment(weights, axis, centre[axis], 3) < 0:
            x = np.flip(x, axis)
    return x


def spectrum(volume: np.ndarray) -> np.ndarray:
    """Log Fourier magnitude summed over mirrored frequencies: unchanged by circular shifts and by axis flips, nearly
    unchanged by small shifts; finds shifted copies of texture (noise-like) volumes that plain NCC misses. The sum is
    the same for every sign of every frequency, so one orthant (0..n/2 per axis) is kept: from a real FFT's half,
    whose last axis's negative frequencies are the others' mirrored (|F(-k)| = |F(k)|)."""
    v = np.asarray(volume, np.float32)
    m = np.log1p(np.abs(sfft.rfftn(v - np.float32(np.mean(v)))))
    for axis in range(m.ndim - 1):
        m = m + np.roll(np.flip(m, axis), 1, axis)
    return m[tuple(slice(0, n) for n in spectrum_shape(v.shape))]


def spectrum_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The spectrum descriptor's grid for a volume on `shape`: frequencies 0..n/2 per axis."""
    return tuple(n // 2 + 1 for n in shape)


def coarse(volume: np.ndarray, max_voxels: int = MAX_DESCRIPTOR_VOXELS) -> np.ndarray:
    """Block means over f^d voxels, f the smallest integer that leaves at most `max_voxels` (f = 1: unchanged)."""
    v = np.asarray(volume, np.float32)
    f = 1
    while np.prod([n // f for n in v.shape]) > max_voxels:
        f += 1
    if f == 1:
        return v
    v = v[tuple(slice(0, n - n % f) for n in v.shape)]
    # the sum of the f^d strided views (each one voxel of every block): far faster than a mean over reshaped axes
    return sum(v[tuple(slice(o, None, f) for o in offset)] for offset in itertools.product(range(f), repeat=v.ndim)) / f**v.ndim


def pixel_descriptors(volumes: Sequence[np.ndarray]) -> np.ndarray:
    """(N, voxels) z-scored volumes: dot products are Pearson correlations."""
    return np.stack([zscore(v).ravel() for v in volumes]).astype(np.float32)


def preview_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(1, n // 2) for n in shape)


def half_size(volume: np.ndarray) -> np.ndarray:
    """Block means over 2 voxels per axis (the preview's grid)."""
    return coarse(volume, int(np.prod(preview_shape(np.shape(volume)))))


def preview(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Each row (a descriptor on `shape`) as block means over 2 voxels per axis, z-scored again."""
    return pixel_descriptors([half_size(r.reshape(shape)) for r in rows])


@dataclass(frozen=True)
class Index:
    """A set's stage-1 descriptors (rows: studies, unit norm) and the coarse grid they live on; `previews` (the
    descriptors at an eighth of their length) when the set is to be searched in two tiers."""

    search: tuple[np.ndarray, ...]   # pixel (the z-scored coarse volume), pose, spectrum, tiny (searched shifted)
    shape: tuple[int, ...]
    volume_shape: tuple[int, ...]    # the studies' own grid
    previews: tuple[np.ndarray, ...] = ()
    prepared: dict = field(default_factory=dict, compare=False, repr=False)   # coarse sources' FFTs and sums, by need

    def coarse_volume(self, row: int) -> np.ndarray:
        return self.search[0][row].reshape(self.shape)

    def half_volume(self, row: int) -> np.ndarray:
        """The coarse volume at half size per axis (its preview when the index has them)."""
        if self.previews:
            return self.previews[0][row].reshape(preview_shape(self.shape))
        return half_size(self.coarse_volume(row))

    @property
    def tiny_shape(self) -> tuple[int, ...]:
        return coarse(np.zeros(self.shape, np.float32), MAX_SHIFTED_VOXELS).shape

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return (self.shape, self.shape, spectrum_shape(self.shape), self.tiny_shape)

    def with_previews(self) -> "Index":
        return Index(self.search, self.shape, self.volume_shape,
                     tuple(preview(d, s) for d, s in zip(self.search, self.shapes())), self.prepared)

    @property
    def tiny_preview_shifted(self) -> bool:
        """Whether the tiny descriptor's preview is searched under shifts too: only where a preview voxel spans fewer
        than SHIFT_FREE_SPAN voxels of the studies along some axis (a larger block barely changes under a shift of a
        few voxels, and the shifted search is most of the preview tier's cost)."""
        return any(n < SHIFT_FREE_SPAN * p for n, p in zip(self.volume_shape, preview_shape(self.tiny_shape)))


def describe(volume: np.ndarray) -> tuple[np.ndarray, ...]:
    """One study's four descriptors (flat, unit norm)."""
    small = coarse(volume)
    return tuple(zscore(v).ravel().astype(np.float32) for v in
                 (small, canonical_pose(small), spectrum(small), coarse(small, MAX_SHIFTED_VOXELS)))


def descriptors(volumes: Sequence[np.ndarray], previews: bool | None = None) -> Index:
    """The descriptors of `volumes` (each on the coarse grid, float32), studies described on WORKERS threads; with
    previews for a two-tier search when asked, or (None) when there are PREVIEW_FROM studies or more."""
    with ThreadPoolExecutor(WORKERS) as pool:
        rows = list(pool.map(describe, [volumes[i] for i in range(len(volumes))]))
    index = Index(tuple(np.stack(column) for column in zip(*rows)), coarse(volumes[0]).shape, np.shape(volumes[0]))
    return index.with_previews() if (len(volumes) >= PREVIEW_FROM if previews is None else previews) else index


def shifted_versions(descriptor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(versions, voxels): the z-scored tiny volume moved by every offset in {-1, 0, 1} per axis (edges repeated)."""
    v = descriptor.reshape(shape)
    padded = np.pad(v, 1, mode="edge")
    out = [zscore(padded[tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, shape))]).ravel()
           for offset in itertools.product((-1, 0, 1), repeat=len(shape))]
    return np.stack(out).astype(np.float32)


def best_first(sims: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) column indices of each row's k largest values, largest first."""
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(sims, part, 1), 1), 1)


def top_k(queries: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 256, shape: tuple[int, ...] | None = None,
          among: np.ndarray | None = None) -> np.ndarray:
    """(Q, k) indices of each query's k most similar gallery rows; memory stays O(chunk x N). With `shape`, a query's
    similarity is the best over its shifted versions (finds copies moved by a few voxels, which the unshifted
    descriptors rank low). With `among` (Q, m), only those rows of the gallery are scored for each query."""
    k = min(k, len(gallery) if among is None else among.shape[1])
    chunk = max(1, chunk // (4 if shape is not None else 1) // (16 if among is not None else 1))
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        part = queries[start : start + chunk]
        versions = np.stack([shifted_versions(q, shape) for q in part]) if shape is not None else part[:, None]
        if among is None:
            sims = (versions @ gallery.T).max(1)
        else:
            rows = among[start : start + chunk]
            sims = (versions @ gallery[rows].transpose(0, 2, 1)).max(1)
        found = best_first(sims, k)
        out[start : start + chunk] = found if among is None else np.take_along_axis(rows, found, 1)
    return out


def candidates(found: Index, index: Index, k: int) -> np.ndarray:
    """(queries, k, descriptors): each descriptor's top k for every query, in two tiers when `index` has previews."""
    shifted = (None, None, None, index.tiny_shape)
    if not index.previews:
        return np.stack([top_k(q, g, k, shape=s) for q, g, s in zip(found.search, index.search, shifted)], axis=2)
    found = found.with_previews()
    tiers = []
    for q, g, qp, gp, s in zip(found.search, index.search, found.previews, index.previews, shifted):
        among = top_k(qp, gp, PREVIEW_FACTOR * k, shape=preview_shape(s) if s and index.tiny_preview_shifted else None)
        tiers.append(top_k(q, g, k, shape=s, among=among))
    return np.stack(tiers, axis=2)
