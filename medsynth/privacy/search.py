"""Copy search: each query's nearest training study under axis flips and small shifts, at about the cost of a
plain correlation search.

Stage 1, a plain search: three descriptors per study, on a grid of at most 32^3 voxels (block means of larger
volumes), compared by dot products in memory-bounded chunks:
  - pixel: the z-scored volume (finds noisy, rescaled, rotated, elastically warped and blurred copies);
  - pose: the volume in a canonical pose, its intensity centroid moved to the grid centre and each axis
    flipped so that its third moment is positive (finds flipped copies);
  - spectrum: the log Fourier magnitude symmetrised over axis flips (finds shifted copies of noise-like texture).
  The candidates of a query are the union of the descriptors' top k.
Stage 2, the shortlist: the `refine` candidates ranked highest in any descriptor.
Stage 3, exact on the shortlist only: the maximum over every axis flip and every shift of at most `max_shift`
voxels of the normalised cross-correlation on the overlap, means removed (the cross term by FFT, Lewis 1995; the
overlap's sums from integral images). A shifted copy scores 1 against its source although most of its content
moved. Volumes larger than the coarse grid are aligned there first (all
flips, shifts scaled down), and only the best (at least 2) go on to full resolution with the flip found.
Cost: stage 1 grows with queries x gallery (a matrix product), stages 2-3 with queries x k only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import fft as sfft, ndimage


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


MAX_DESCRIPTOR_VOXELS = 32**3
MAX_SHIFTED_VOXELS = 20**3   # the tiny descriptor, searched under every one-voxel shift of the query


def coarse(volume: np.ndarray, max_voxels: int = MAX_DESCRIPTOR_VOXELS) -> np.ndarray:
    """Block means over f^d voxels, f the smallest integer that leaves at most `max_voxels` (f = 1: unchanged)."""
    v = np.asarray(volume, np.float32)
    f = 1
    while np.prod([n // f for n in v.shape]) > max_voxels:
        f += 1
    if f == 1:
        return v
    v = v[tuple(slice(0, n - n % f) for n in v.shape)]
    return v.reshape([x for n in v.shape for x in (n // f, f)]).mean(tuple(range(1, 2 * v.ndim, 2)))


def pixel_descriptors(volumes: Sequence[np.ndarray]) -> np.ndarray:
    """(N, voxels) z-scored volumes: dot products are Pearson correlations."""
    return np.stack([zscore(v).ravel() for v in volumes]).astype(np.float32)


def flip_axes(ndim: int) -> list[tuple[int, ...]]:
    """Every combination of axis flips, the identity () first."""
    return [a for r in range(ndim + 1) for a in itertools.combinations(range(ndim), r)]


@dataclass(frozen=True)
class Index:
    """A set's stage-1 descriptors (rows: studies, unit norm) and the coarse grid they live on."""

    search: tuple[np.ndarray, ...]   # pixel (the z-scored coarse volume), pose, spectrum, tiny (searched shifted)
    shape: tuple[int, ...]

    def coarse_volume(self, row: int) -> np.ndarray:
        return self.search[0][row].reshape(self.shape)


def descriptors(volumes: Sequence[np.ndarray]) -> Index:
    """The descriptors of `volumes` (each on the coarse grid, float32)."""
    small = [coarse(v) for v in volumes]
    pixel = pixel_descriptors(small)
    pose = np.stack([zscore(canonical_pose(v)).ravel() for v in small]).astype(np.float32)
    spec = np.stack([zscore(spectrum(v)).ravel() for v in small]).astype(np.float32)
    tiny = pixel_descriptors([coarse(v, MAX_SHIFTED_VOXELS) for v in small])
    return Index((pixel, pose, spec, tiny), small[0].shape)


def shifted_versions(descriptor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(versions, voxels): the z-scored tiny volume moved by every offset in {-1, 0, 1} per axis (edges repeated)."""
    v = descriptor.reshape(shape)
    padded = np.pad(v, 1, mode="edge")
    out = [zscore(padded[tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, shape))]).ravel()
           for offset in itertools.product((-1, 0, 1), repeat=len(shape))]
    return np.stack(out).astype(np.float32)


def top_k_shifted(queries: np.ndarray, gallery: np.ndarray, shape: tuple[int, ...], k: int, chunk: int = 64) -> np.ndarray:
    """top_k with each query's similarity the best over its shifted versions: finds copies moved by a few voxels,
    which the unshifted descriptors rank low."""
    k = min(k, len(gallery))
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        versions = np.stack([shifted_versions(q, shape) for q in queries[start : start + chunk]])   # (q, V, D)
        sims = (versions @ gallery.T).max(1)
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out[start : start + chunk] = np.take_along_axis(part, np.argsort(-np.take_along_axis(sims, part, 1), 1), 1)
    return out


def top_k(queries: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """(Q, k) indices of each query's k most similar gallery rows; memory stays O(chunk x N)."""
    k = min(k, len(gallery))
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ gallery.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out[start : start + chunk] = np.take_along_axis(part, np.argsort(-np.take_along_axis(sims, part, 1), 1), 1)
    return out


def box_sums(volume: np.ndarray, max_shift: int, query_side: bool) -> np.ndarray:
    """Sums of `volume` over the overlap of a volume with itself moved by every offset |o| <= max_shift (per axis,
    in the order 0..m, -m..-1), from one integral image: the query side covers [max(0, o), min(n, n + o)), the
    source side [max(0, -o), min(n, n - o))."""
    integral = np.pad(np.asarray(volume, np.float64), [(1, 0)] * volume.ndim)
    for axis in range(volume.ndim):
        integral = integral.cumsum(axis)
    offsets = np.r_[0 : max_shift + 1, -max_shift:0]
    sign = 1 if query_side else -1
    lo = [np.maximum(0, sign * offsets) for _ in volume.shape]
    hi = [np.minimum(n, n + sign * offsets) for n in volume.shape]
    total = 0.0
    for corner in itertools.product((0, 1), repeat=volume.ndim):
        index = np.ix_(*[low if c else high for c, low, high in zip(corner, lo, hi)])
        total = total + (-1) ** sum(corner) * integral[index]
    return total


def best_alignment(query: np.ndarray, source: np.ndarray, max_shift: int = 2, flips: Sequence[tuple[int, ...]] | None = None,
                   ) -> tuple[float, tuple[int, ...], tuple[int, ...]]:
    """Max over axis flips of `query` (all, or those given) and shifts |s| <= max_shift of the overlap NCC with `source`.

    The cross term is one FFT correlation per flip; the overlap's sums and sums of squares come from integral images.
    """
    shape = tuple(sfft.next_fast_len(n + max_shift, real=True) for n in source.shape)   # no wrap-around within the window
    window = np.ix_(*[np.r_[0 : max_shift + 1, -max_shift:0]] * source.ndim)
    offsets = np.r_[0 : max_shift + 1, -max_shift:0]
    g = zscore(source)
    G = np.conj(sfft.rfftn(g, s=shape))
    count = box_sums(np.ones(source.shape), max_shift, False)
    sum_g, sum_g2 = box_sums(g, max_shift, False), box_sums(g * g, max_shift, False)
    best = (-1.0, (), (0,) * source.ndim)
    for axes in flip_axes(source.ndim) if flips is None else flips:
        q = zscore(np.flip(query, axes) if axes else query)
        sum_q, sum_q2 = box_sums(q, max_shift, True), box_sums(q * q, max_shift, True)
        cross = sfft.irfftn(sfft.rfftn(q, s=shape) * G, s=shape)[window]
        cov = cross - sum_q * sum_g / count
        var = (sum_q2 - sum_q**2 / count) * (sum_g2 - sum_g**2 / count)
        ncc = cov / np.sqrt(np.maximum(var, 1e-12))
        at = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
        if ncc[at] > best[0]:
            best = (float(ncc[at]), tuple(axes), tuple(int(offsets[i]) for i in at))
    return best


def ranked(queries: Sequence[np.ndarray], gallery: Sequence[np.ndarray], k: int = 20, max_shift: int = 2, keep: int = 3,
           gallery_descriptors: Index | None = None, refine: int = 10, chunk: int = 256) -> list[list[Match]]:
    """The `keep` best training matches of every query, best first (volumes on one grid, any intensity units).

    Queries are described `chunk` at a time, so memory holds the gallery's index and one chunk, not every query."""
    grid = {np.shape(v) for v in gallery}
    index = gallery_descriptors or descriptors(gallery)
    axes = flip_axes(np.ndim(gallery[0]))
    out = []
    for start in range(0, len(queries), chunk):
        part = queries[start : start + chunk]
        shapes = grid | {np.shape(v) for v in part}
        if len(shapes) != 1:
            raise ValueError(f"all studies must share one grid to be compared, got shapes {sorted(shapes)}")
        found = descriptors(part)
        # (queries, k, descriptors): read row by row, candidates come in order of their best rank in any descriptor
        tiny = coarse(np.zeros(index.shape), MAX_SHIFTED_VOXELS).shape
        candidates = np.stack([top_k(q, g, k) for q, g in zip(found.search[:3], index.search[:3])]
                              + [top_k_shifted(found.search[3], index.search[3], tiny, k)], axis=2)
        for n, (query, ranks) in enumerate(zip(part, candidates)):
            shortlist = list(dict.fromkeys(ranks.ravel().tolist()))[: max(refine, keep)]
            factor = np.shape(query)[0] / index.shape[0]
            flips = {row: None for row in shortlist}
            if factor > 1:   # flips and a first score on the coarse grid; the best go on to full resolution
                shift = int(np.ceil(max_shift / factor))
                on_coarse = {row: best_alignment(found.coarse_volume(n), index.coarse_volume(row), shift) for row in shortlist}
                flips = {row: [on_coarse[row][1]] for row in sorted(shortlist, key=lambda r: -on_coarse[r][0])[: max(keep, 2)]}
            best = [Match(int(row), *best_alignment(query, gallery[row], max_shift, tried)) for row, tried in flips.items()]
            out.append(sorted(best, key=lambda m: -m.score)[:keep])
    return out


def nearest(queries: Sequence[np.ndarray], gallery: Sequence[np.ndarray], k: int = 20, max_shift: int = 2,
            gallery_descriptors: Index | None = None) -> list[Match]:
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


def flat_regions(volume: np.ndarray, detail: np.ndarray, keep: float = 0.5, sigma: float = 1.5) -> np.ndarray:
    """Voxels away from edges: the `keep` share of the volume's textured voxels (non-zero in `detail`, its
    high_pass) with the lowest smoothed gradient. There the high-passed volume is the acquisition's own texture and
    noise, not tissue borders that every patient's scan shares; padding (no texture) is left out."""
    textured = np.abs(detail) > 1e-6
    if not textured.any():
        return textured
    grad = ndimage.gaussian_gradient_magnitude(np.asarray(volume, np.float32), sigma)
    return textured & (grad <= np.percentile(grad[textured], 100 * keep))


def texture_score(query: np.ndarray, source: np.ndarray, block: int = 8, max_shift: int = 2) -> float:
    """Median over blocks of the block's best NCC, over local shifts |s| <= max_shift, between the high-passed
    volumes (query already aligned to source), counted in the source's flat regions only. A smooth warp or small
    rotation is a shift within each block, so a warped copy keeps its source's texture block by block; unrelated
    studies' textures do not correlate (about 0 on flat regions, where no shared tissue border adds to it).
    """
    g = high_pass(source)
    flat = flat_regions(source, g)
    q, g = high_pass(query), g * flat
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
