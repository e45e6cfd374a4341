"""Copy search: each query's nearest training study under axis flips and small shifts, at about the cost of a
plain correlation search.

Stage 1, a plain search: two descriptors per study, compared by dot products in memory-bounded chunks:
  - pixel: the z-scored volume (finds noisy, rescaled, rotated, elastically warped and blurred copies);
  - pose: the volume in a canonical pose, its intensity centroid moved to the grid centre and each axis
    flipped so that its third moment is positive (finds flipped copies).
  The candidates of a query are the union of both descriptors' top k.
Stage 2, exact on k candidates only: the maximum over every combination of axis flips and every shift of
at most `max_shift` voxels of the normalised cross-correlation on the overlap, means removed (computed with
FFTs, Lewis 1995). A shifted copy scores 1 against its source although most of its content moved.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Match:
    """The best training match of one query: its index, score and the transform that achieves it."""

    index: int
    score: float               # normalised cross-correlation in [-1, 1]
    flip_axes: tuple[int, ...]
    shift: tuple[int, ...]     # voxels


def zscore(volume: np.ndarray) -> np.ndarray:
    """Zero mean, unit norm (a constant volume becomes zeros)."""
    v = np.asarray(volume, np.float64) - float(np.mean(volume))
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def canonical_pose(volume: np.ndarray) -> np.ndarray:
    """Centroid to the grid centre (linear interpolation), then each axis flipped so its third moment is positive.

    Weights are intensities above the volume's minimum, so background (air, padding) carries none.
    """
    x = np.asarray(volume, np.float64)
    weights = x - x.min()
    grid = np.indices(x.shape).reshape(x.ndim, -1).T
    centre = (np.array(x.shape) - 1) / 2.0
    if weights.sum() > 0:
        centroid = (grid * weights.reshape(-1, 1)).sum(0) / weights.sum()
        x = ndimage.shift(x, centre - centroid, order=1, mode="constant", cval=float(x.min()))
    weights = (x - x.min()).reshape(-1)
    for axis in range(x.ndim):
        if (weights * (grid[:, axis] - centre[axis]) ** 3).sum() < 0:
            x = np.flip(x, axis)
    return x


def descriptors(volumes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(pixel, pose) descriptor matrices, (N, voxels) float32 with unit-norm rows."""
    pixel = np.stack([zscore(v).ravel() for v in volumes]).astype(np.float32)
    pose = np.stack([zscore(canonical_pose(v)).ravel() for v in volumes]).astype(np.float32)
    return pixel, pose


def top_k(queries: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """(Q, k) indices of each query's k most similar gallery rows; memory stays O(chunk x N)."""
    k = min(k, len(gallery))
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ gallery.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out[start : start + chunk] = np.take_along_axis(part, np.argsort(-np.take_along_axis(sims, part, 1), 1), 1)
    return out


def best_alignment(query: np.ndarray, source: np.ndarray, max_shift: int = 2) -> tuple[float, tuple[int, ...], tuple[int, ...]]:
    """Max over axis flips of `query` and shifts |s| <= max_shift of the overlap NCC with `source`."""
    shape = tuple(n + 2 * max_shift for n in source.shape)
    window = np.ix_(*[np.r_[0 : max_shift + 1, -max_shift:0]] * source.ndim)
    offsets = [np.r_[0 : max_shift + 1, -max_shift:0]] * source.ndim
    spectrum = lambda a: np.fft.rfftn(a, s=shape)  # noqa: E731
    ones = np.ones(source.shape)
    g = zscore(source)
    G, G2, One = np.conj(spectrum(g)), np.conj(spectrum(g * g)), np.conj(spectrum(ones))

    def correlate(a, B):
        return np.fft.irfftn(spectrum(a) * B, s=shape)[window]

    count = correlate(ones, One)
    sum_g, sum_g2 = correlate(ones, G), correlate(ones, G2)
    best = (-1.0, (), (0,) * source.ndim)
    for axes in (a for r in range(source.ndim + 1) for a in itertools.combinations(range(source.ndim), r)):
        q = zscore(np.flip(query, axes) if axes else query)
        sum_q = correlate(q, One)
        cov = correlate(q, G) - sum_q * sum_g / count
        var = (correlate(q * q, One) - sum_q**2 / count) * (sum_g2 - sum_g**2 / count)
        ncc = cov / np.sqrt(np.maximum(var, 1e-12))
        at = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
        if ncc[at] > best[0]:
            best = (float(ncc[at]), axes, tuple(int(o[i]) for o, i in zip(offsets, at)))
    return best


def nearest(queries: Sequence[np.ndarray], gallery: Sequence[np.ndarray], k: int = 20, max_shift: int = 2,
            gallery_descriptors: tuple[np.ndarray, np.ndarray] | None = None) -> list[Match]:
    """The best training match of every query (volumes on one grid, any intensity units)."""
    shapes = {np.shape(v) for v in list(queries) + list(gallery)}
    if len(shapes) != 1:
        raise ValueError(f"all studies must share one grid to be compared, got shapes {sorted(shapes)}")
    gallery_pixel, gallery_pose = gallery_descriptors or descriptors(gallery)
    query_pixel, query_pose = descriptors(queries)
    candidates = np.concatenate([top_k(query_pixel, gallery_pixel, k), top_k(query_pose, gallery_pose, k)], axis=1)
    matches = []
    for query, rows in zip(queries, candidates):
        scored = [(best_alignment(query, gallery[i], max_shift), int(i)) for i in dict.fromkeys(rows.tolist())]
        (score, axes, shift), index = max(scored, key=lambda item: item[0][0])
        matches.append(Match(index, score, axes, shift))
    return matches
