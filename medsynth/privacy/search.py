"""Copy search: each query's nearest training study under axis flips and small shifts, at about the cost of a
plain correlation search.

Stage 1, a plain search: three descriptors per study, compared by dot products in memory-bounded chunks:
  - pixel: the z-scored volume (finds noisy, rescaled, rotated, elastically warped and blurred copies);
  - pose: the volume in a canonical pose, its intensity centroid moved to the grid centre and each axis
    flipped so that its third moment is positive (finds flipped copies);
  - spectrum: the log Fourier magnitude symmetrised over axis flips (finds shifted copies of noise-like texture).
  The candidates of a query are the union of the descriptors' top k.
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


def spectrum(volume: np.ndarray) -> np.ndarray:
    """Log Fourier magnitude, averaged over mirrored frequency axes: unchanged by circular shifts and by axis flips,
    nearly unchanged by small shifts; finds shifted copies of texture (noise-like) volumes that plain NCC misses."""
    m = np.log1p(np.abs(np.fft.fftn(np.asarray(volume, np.float64) - np.mean(volume))))
    for axis in range(m.ndim):
        m = m + np.roll(np.flip(m, axis), 1, axis)
    return m


def pixel_descriptors(volumes: Sequence[np.ndarray]) -> np.ndarray:
    """(N, voxels) z-scored volumes: dot products are Pearson correlations."""
    return np.stack([zscore(v).ravel() for v in volumes]).astype(np.float32)


def descriptors(volumes: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """(pixel, pose, spectrum) descriptor matrices, (N, voxels) float32 with unit-norm rows."""
    pixel = pixel_descriptors(volumes)
    pose = np.stack([zscore(canonical_pose(v)).ravel() for v in volumes]).astype(np.float32)
    spec = np.stack([zscore(spectrum(v)).ravel() for v in volumes]).astype(np.float32)
    return pixel, pose, spec


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


def ranked(queries: Sequence[np.ndarray], gallery: Sequence[np.ndarray], k: int = 20, max_shift: int = 2, keep: int = 3,
           gallery_descriptors: tuple[np.ndarray, ...] | None = None) -> list[list[Match]]:
    """The `keep` best training matches of every query, best first (volumes on one grid, any intensity units)."""
    shapes = {np.shape(v) for v in list(queries) + list(gallery)}
    if len(shapes) != 1:
        raise ValueError(f"all studies must share one grid to be compared, got shapes {sorted(shapes)}")
    found = descriptors(queries)
    candidates = np.concatenate([top_k(q, g, k) for q, g in zip(found, gallery_descriptors or descriptors(gallery))], axis=1)
    out = []
    for query, rows in zip(queries, candidates):
        scored = [Match(int(i), *best_alignment(query, gallery[i], max_shift)) for i in dict.fromkeys(rows.tolist())]
        out.append(sorted(scored, key=lambda m: -m.score)[:keep])
    return out


def nearest(queries: Sequence[np.ndarray], gallery: Sequence[np.ndarray], k: int = 20, max_shift: int = 2,
            gallery_descriptors: tuple[np.ndarray, ...] | None = None) -> list[Match]:
    """The best training match of every query."""
    return [r[0] for r in ranked(queries, gallery, k, max_shift, 1, gallery_descriptors)]


def align(volume: np.ndarray, match: Match, fill: float | None = None) -> np.ndarray:
    """`volume` (a query) flipped and shifted as `match` says, so it lies over its training match."""
    x = np.flip(volume, match.flip_axes) if match.flip_axes else np.asarray(volume)
    fill = float(x.min()) if fill is None else fill
    return ndimage.shift(x, [-s for s in match.shift], order=0, mode="constant", cval=fill)


def high_pass(volume: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """The volume minus its Gaussian-smoothed self: fine texture and noise, the part unique to one acquisition.
    Clipped at 3 robust standard deviations, so tissue borders (shared by every study) do not dominate."""
    v = np.asarray(volume, np.float32)
    hp = v - ndimage.gaussian_filter(v, sigma)
    active = hp[np.abs(hp) > 1e-6]
    limit = 3.0 * 1.4826 * float(np.median(np.abs(active - np.median(active)))) if active.size else 0.0
    return np.clip(hp, -limit, limit) if limit > 0 else hp


def flat_regions(volume: np.ndarray, keep: float = 0.5, sigma: float = 1.5) -> np.ndarray:
    """Voxels away from edges: the `keep` share of the volume's textured voxels with the lowest smoothed gradient.
    There the high-passed volume is the acquisition's own texture and noise, not tissue borders that every patient's
    scan shares; padding (no texture) is left out."""
    v = np.asarray(volume, np.float32)
    textured = np.abs(v - ndimage.gaussian_filter(v, 1.0)) > 1e-6
    if not textured.any():
        return textured
    grad = ndimage.gaussian_gradient_magnitude(v, sigma)
    return textured & (grad <= np.percentile(grad[textured], 100 * keep))


def texture_score(query: np.ndarray, source: np.ndarray, block: int = 8, max_shift: int = 2) -> float:
    """Median over blocks of the block's best NCC, over local shifts |s| <= max_shift, between the high-passed
    volumes (query already aligned to source), counted in the source's flat regions only. A smooth warp or small
    rotation is a shift within each block, so a warped copy keeps its source's texture block by block; unrelated
    studies' textures do not correlate (about 0 on flat regions, where no shared tissue border adds to it).
    """
    flat = flat_regions(source)
    q, g = high_pass(query), high_pass(source) * flat
    cut = tuple(slice(0, n - n % block) for n in g.shape)
    q, g, flat = q[cut], g[cut], flat[cut].astype(np.float32)
    grid = tuple(n // block for n in g.shape)
    blocks = lambda a: a.reshape([x for n in grid for x in (n, block)]).sum(tuple(range(1, 2 * len(grid), 2)))  # noqa: E731
    g2 = blocks(g * g)
    best = np.full(grid, -1.0)
    for shift in itertools.product(range(-max_shift, max_shift + 1), repeat=g.ndim):
        qs = np.roll(q, shift, axis=tuple(range(g.ndim)))
        ncc = blocks(qs * g) / np.sqrt(np.maximum(blocks(qs * qs * flat) * g2, 1e-12))
        best = np.maximum(best, ncc)
    keep = (g2 > 0.1 * np.median(g2[g2 > 0])) if (g2 > 0).any() else g2 > 0   # blocks with flat texture
    return float(np.median(best[keep])) if keep.any() else 0.0
