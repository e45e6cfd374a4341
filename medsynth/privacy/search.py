"""Copy search: each query's nearest training study under axis flips and small shifts, at about the cost of a
plain correlation search.

Stage 1, a plain search over four descriptors per study, in two tiers for large galleries
(medsynth.privacy.descriptors); the candidates of a query are the union of the descriptors' top k.
Stage 2, the shortlist: the `refine` candidates ranked highest in any descriptor.
Stage 3, exact on the shortlist only: the maximum over every axis flip and every shift of at most `max_shift`
voxels of the normalised cross-correlation on the overlap, means removed (the cross term by FFT, Lewis 1995; the
overlap's sums from integral images). A shifted copy scores 1 against its source although most of its content
moved. Volumes larger than the coarse grid are aligned there first (all flips, shifts scaled down; a coarse grid of
24 voxels per axis or more is searched at half size before, and only CASCADE_KEEP candidates go on), and only the
best (at least 2) go on to full resolution with the flip found. A query's flips, their FFTs (derived from one FFT:
a flip is a phase and a reversal of frequencies) and overlap sums are computed once for its whole shortlist
(Aligner); queries run on several threads.
Cost: stage 1 grows with queries x gallery (a matrix product), stages 2-3 with queries x k only.
"""

from __future__ import annotations

import functools
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import fft as sfft, ndimage
from threadpoolctl import threadpool_limits

from medsynth.privacy.descriptors import WORKERS, Index, candidates, descriptors, half_size, zscore

CASCADE_SIDE = 12   # coarse grids of twice this many voxels per axis or more are first searched at half size
CASCADE_KEEP = 10   # candidates the half-size search passes on to the coarse grid


@dataclass(frozen=True)
class Match:
    """The best training match of one query: its index, score and the transform that achieves it."""

    index: int
    score: float               # normalised cross-correlation in [-1, 1]
    flip_axes: tuple[int, ...]
    shift: tuple[int, ...]     # voxels


def flip_axes(ndim: int) -> list[tuple[int, ...]]:
    """Every combination of axis flips, the identity () first."""
    return [a for r in range(ndim + 1) for a in itertools.combinations(range(ndim), r)]


def kept(n: int, max_shift: int) -> np.ndarray:
    """The positions of an axis of n voxels where box_sums reads an integral image: the first and last max_shift + 1
    (all n + 1 on a short axis)."""
    return np.r_[0 : max_shift + 1, n - max_shift : n + 1] if n > 2 * max_shift + 1 else np.arange(n + 1)


def integral_image(volume: np.ndarray, max_shift: int) -> np.ndarray:
    """The volume's integral image (cumulative sums along every axis, zero-padded in front) at the `kept` positions of
    every axis only, from one pass over the volume instead of one per axis."""
    m, x = max_shift, np.asarray(volume, np.float64)
    for axis, n in enumerate(x.shape):   # the earlier axes already reduced
        total = x.sum(axis, keepdims=True)
        if n <= 2 * m + 1:
            x = np.concatenate([np.zeros_like(total), np.cumsum(x, axis)], axis)
            continue
        head = np.cumsum(np.take(x, range(m), axis), axis)
        tail = total - np.flip(np.cumsum(np.flip(np.take(x, range(n - m, n), axis), axis), axis), axis)
        x = np.concatenate([np.zeros_like(total), head, tail, total], axis)
    return x


def box_sums(volume: np.ndarray, max_shift: int, query_side: bool | Sequence[bool],
             integral: np.ndarray | None = None) -> np.ndarray:
    """Sums of `volume` over the overlap of a volume with itself moved by every offset |o| <= max_shift (per axis,
    in the order 0..m, -m..-1), from one integral image: the query side covers [max(0, o), min(n, n + o)), the
    source side [max(0, -o), min(n, n - o)). `query_side` may differ per axis: the query side of a volume flipped
    along an axis is the source side of the unflipped one, so one integral image serves every flip."""
    integral = integral_image(volume, max_shift) if integral is None else integral
    sides = (query_side,) * volume.ndim if isinstance(query_side, bool) else tuple(query_side)
    corners = integral[box_corners(volume.shape, max_shift, sides)]
    for axis in range(volume.ndim):   # inclusion-exclusion: upper minus lower corner along each axis in turn
        half = corners.shape[axis] // 2
        before = (slice(None),) * axis
        corners = corners[(*before, slice(0, half))] - corners[(*before, slice(half, None))]
    return corners


@functools.lru_cache(maxsize=256)
def box_corners(shape: tuple[int, ...], max_shift: int, sides: tuple[bool, ...]) -> tuple[np.ndarray, ...]:
    """Where box_sums reads the integral image (`kept` positions): per axis, the overlap's upper ends then its lower
    ends, so one gather reads every corner of every box."""
    offsets = np.r_[0 : max_shift + 1, -max_shift:0]
    ends = [np.r_[np.minimum(n, n + sign * offsets), np.maximum(0, sign * offsets)]
            for n, sign in zip(shape, [1 if side else -1 for side in sides])]
    return np.ix_(*[np.searchsorted(kept(n, max_shift), e) for n, e in zip(shape, ends)])


@functools.lru_cache(maxsize=64)
def twiddles(n: int, offsets: tuple[int, ...], half: bool, dtype) -> np.ndarray:
    """(offsets, frequencies) inverse-DFT weights of one axis of length n at the given output offsets; `half`: the
    last axis of a real FFT (frequencies 0..n/2), its bins other than 0 and n/2 counted twice (Hermitian symmetry)."""
    k = np.arange(n // 2 + 1 if half else n)
    weight = np.where((k == 0) | (2 * k == n), 1.0, 2.0) if half else np.ones(len(k))
    return (weight * np.exp(2j * np.pi * np.outer(offsets, k) / n) / n).astype(dtype)


def partial_inverse(spectra: np.ndarray, shape: tuple[int, ...], offsets: np.ndarray) -> np.ndarray:
    """irfftn(spectra, s=shape) at the given offsets along every axis only, (B, *real FFT shape) -> (B, m, .., m):
    one small matrix product per axis instead of a whole inverse FFT, as the exact search needs a few shifts."""
    m, batch, x = len(offsets), len(spectra), spectra
    for axis, n in enumerate(shape[:-1]):
        x = np.matmul(twiddles(n, tuple(offsets), False, spectra.dtype), x.reshape(batch * m**axis, n, -1))
    half = twiddles(shape[-1], tuple(offsets), True, spectra.dtype)
    return np.real(x.reshape(batch, m ** (len(shape) - 1), -1) @ half.T).reshape(batch, *(m,) * len(shape))


def flipped_spectrum(spectrum: np.ndarray, axes: tuple[int, ...], size: tuple[int, ...], shape: tuple[int, ...],
                     ) -> np.ndarray:
    """rfftn(np.flip(v, axes), s=shape) from rfftn(v, s=shape) without another FFT (v of shape `size`, real): flipping
    axis a negates its frequencies and multiplies by exp(-2 pi i k (n_a - 1) / N_a); the last axis, stored for
    frequencies >= 0 only, is negated through Hermitian symmetry (conjugate, every other axis negated)."""
    if not axes:
        return spectrum
    last = len(shape) - 1
    x = spectrum
    for a in [a for a in range(last) if (a in axes) != (last in axes)]:   # index k -> (N - k) mod N
        x = np.roll(np.flip(x, a), 1, a)
    x = np.conj(x) if last in axes else x
    phase = functools.reduce(np.multiply, [flip_phase(size[a], shape[a], x.shape[a], spectrum.dtype).reshape(
        [-1 if b == a else 1 for b in range(x.ndim)]) for a in axes])
    return x * phase


@functools.lru_cache(maxsize=64)
def flip_phase(n: int, length: int, bins: int, dtype) -> np.ndarray:
    """exp(-2 pi i k (n - 1) / length) for the first `bins` frequencies k: the phase of a flip of n samples."""
    return np.exp(-2j * np.pi * np.arange(bins) * (n - 1) / length).astype(dtype)


@functools.lru_cache(maxsize=16)
def overlap_count(shape: tuple[int, ...], max_shift: int) -> np.ndarray:
    """Voxels in the overlap at every offset (box_sums of ones)."""
    return box_sums(np.ones(shape), max_shift, False)


class Aligner:
    """One query, ready to be aligned against many sources: its z-scored flips, their FFTs and their overlap sums are
    computed once, so a shortlist costs one FFT product per (source, flip). A source's side can be kept too
    (`prepare`, reused through `cache`). `dtype` float32 halves the cost where only a ranking is needed."""

    def __init__(self, query: np.ndarray, max_shift: int, dtype=np.float64) -> None:
        self.query, self.max_shift, self.dtype = np.asarray(query), max_shift, dtype
        self.shape = tuple(sfft.next_fast_len(n + max_shift, real=True) for n in self.query.shape)  # no wrap-around
        self.offsets = np.r_[0 : max_shift + 1, -max_shift:0]
        self.count = overlap_count(self.query.shape, max_shift)
        self.flips: dict[tuple[int, ...], tuple] = {}
        self.spectrum: np.ndarray | None = None   # the unflipped query's FFT; every flip's is derived from it
        self.z = zscore(self.query)
        self.integrals = (integral_image(self.z, max_shift), integral_image(self.z * self.z, max_shift))

    def flipped(self, axes: tuple[int, ...]) -> tuple:
        if axes not in self.flips:
            if self.spectrum is None:
                self.spectrum = sfft.rfftn(self.z.astype(self.dtype), s=self.shape)
            sides = [axis not in axes for axis in range(self.z.ndim)]
            sum_q, sum_q2 = (box_sums(self.z, self.max_shift, sides, integral) for integral in self.integrals)
            self.flips[axes] = (flipped_spectrum(self.spectrum, axes, self.z.shape, self.shape), sum_q,
                                sum_q2 - sum_q**2 / self.count)
        return self.flips[axes]

    def sums(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sum_g, sum_g2 = (box_sums(x, self.max_shift, False, integral_image(x, self.max_shift)) for x in (g, g * g))
        return sum_g, sum_g2 - sum_g**2 / self.count

    def source_side(self, source: np.ndarray, cache: dict | None, key, keep_fft: bool) -> tuple:
        """The source's conjugate FFT and overlap sums; with `cache`, the sums (and, `keep_fft`, the FFT) are kept
        under `key` for the next query."""
        fft = lambda g: np.conj(sfft.rfftn(g.astype(self.dtype), s=self.shape))  # noqa: E731
        cached = cache.get(key) if cache is not None else None
        if cached is None:
            g = zscore(source)
            G, (sum_g, var_g) = fft(g), self.sums(g)
            if cache is not None:
                cache[key] = (G if keep_fft else None, sum_g, var_g)
            return G, sum_g, var_g
        G, sum_g, var_g = cached
        return (fft(zscore(source)) if G is None else G), sum_g, var_g

    def best(self, source: np.ndarray, flips: Sequence[tuple[int, ...]] | None = None, cache: dict | None = None,
             key=None, keep_fft: bool = False) -> tuple[float, tuple[int, ...], tuple[int, ...]]:
        """Max over axis flips of the query (all, or those given) and shifts |s| <= max_shift of the overlap NCC."""
        return self.best_of(*(x[None] for x in self.source_side(source, cache, key, keep_fft)), flips)[0]

    def best_each(self, sources: Sequence[np.ndarray], keys: Sequence, cache: dict | None = None,
                  keep_fft: bool = False, flips: Sequence[tuple[int, ...]] | None = None,
                  ) -> list[tuple[float, tuple[int, ...], tuple[int, ...]]]:
        """`best` for every source under every flip (or those given), the cross terms of all (flip, source) pairs in
        one partial inverse DFT."""
        sides = [self.source_side(source, cache, key, keep_fft) for source, key in zip(sources, keys)]
        return self.best_of(*(np.stack(column) for column in zip(*sides)), flips)

    def best_of(self, G: np.ndarray, sum_g: np.ndarray, var_g: np.ndarray, flips) -> list[tuple]:
        """(score, flip, shift) per source side (stacked on the first axis): the best over flips and shifts."""
        flips = flip_axes(self.query.ndim) if flips is None else [tuple(a) for a in flips]
        Q, sum_q, var_q = (np.stack(column) for column in zip(*(self.flipped(a) for a in flips)))
        cross = partial_inverse((Q[:, None] * G[None]).reshape(-1, *G.shape[1:]), self.shape, self.offsets)
        cross = cross.reshape(len(Q), len(G), *cross.shape[1:])
        ncc = (cross - sum_q[:, None] * sum_g[None] / self.count) / np.sqrt(np.maximum(var_q[:, None] * var_g[None], 1e-12))
        per_source = np.moveaxis(ncc, 1, 0).reshape(len(G), -1)   # (sources, flips x offsets), flips in order
        out = []
        for row in per_source:
            flip, at = divmod(int(np.argmax(row)), ncc[0, 0].size)
            out.append((float(row.max()), flips[flip],
                        tuple(int(self.offsets[i]) for i in np.unravel_index(at, ncc.shape[2:]))))
        return out


def best_alignment(query: np.ndarray, source: np.ndarray, max_shift: int = 2, flips: Sequence[tuple[int, ...]] | None = None,
                   ) -> tuple[float, tuple[int, ...], tuple[int, ...]]:
    """Max over axis flips of `query` (all, or those given) and shifts |s| <= max_shift of the overlap NCC with `source`.

    The cross term is one FFT correlation per flip; the overlap's sums and sums of squares come from integral images.
    """
    return Aligner(query, max_shift).best(source, flips)


def ranked(queries: Sequence[np.ndarray], gallery: Sequence[np.ndarray], k: int = 20, max_shift: int = 2, keep: int = 3,
           gallery_descriptors: Index | None = None, refine: int = 10, chunk: int = 256,
           on_chunk: Callable[[int], None] | None = None) -> list[list[Match]]:
    """The `keep` best training matches of every query, best first (volumes on one grid, any intensity units).

    Queries are described `chunk` at a time, so memory holds the gallery's index and one chunk, not every query;
    the exact stage runs on WORKERS threads (FFTs release the GIL). `on_chunk(done)` is told after each chunk."""
    grid, short = {np.shape(v) for v in gallery}, max(refine, keep)
    index = gallery_descriptors or descriptors(gallery)
    out = []
    with ThreadPoolExecutor(WORKERS) as pool:
        for start in range(0, len(queries), chunk):
            part = queries[start : start + chunk]
            shapes = grid | {np.shape(v) for v in part}
            if len(shapes) != 1:
                raise ValueError(f"all studies must share one grid to be compared, got shapes {sorted(shapes)}")
            found = descriptors(part, previews=False)
            # (queries, k, descriptors): read row by row, candidates come in order of their best rank in any descriptor;
            # the first `short` distinct ones lie within every descriptor's top `short`, so no more are looked for
            shortlists = [list(dict.fromkeys(ranks.ravel().tolist()))[:short]
                          for ranks in candidates(found, index, min(k, short))]
            exact = lambda n: exact_stage(part[n], n, shortlists[n], found, index, gallery, max_shift, keep)  # noqa: E731
            with threadpool_limits(1, "blas"):   # the query threads share the cores: BLAS threads would oversubscribe
                out += list(pool.map(exact, range(len(part))))
            if on_chunk:
                on_chunk(start + len(part))
    return out


def exact_stage(query: np.ndarray, n: int, shortlist: list[int], found: Index, index: Index, gallery, max_shift: int,
                keep: int) -> list[Match]:
    """The shortlist's flips and a first score on the coarse grid (when it is smaller than the volumes); the best
    (at least 2) go on to full resolution with the flip found there."""
    flips = {row: None for row in shortlist}
    factor = np.shape(query)[0] / index.shape[0]
    if factor > 1:
        flips = coarse_flips(found.coarse_volume(n), shortlist, index, factor, max_shift, max(keep, 2))
    full = Aligner(query, max_shift, np.float32)
    if factor <= 1:   # the volumes are the coarse grid: every flip of every candidate, in one go
        rows = list(flips)
        scores = full.best_each([gallery[row] for row in rows], [(row, max_shift, "full") for row in rows], index.prepared)
        best = [Match(int(row), *score) for row, score in zip(rows, scores)]
    else:
        best = [Match(int(row), *full.best(gallery[row], tried, index.prepared, (row, max_shift, "full")))
                for row, tried in flips.items()]
    return sorted(best, key=lambda m: -m.score)[:keep]


def coarse_flips(query: np.ndarray, shortlist: list[int], index: Index, factor: float, max_shift: int,
                 keep: int) -> dict[int, list[tuple[int, ...]]]:
    """The `keep` candidates that score best on the coarse grid under every flip, each with its best flip. A coarse
    grid of at least 2 x CASCADE_SIDE voxels per axis is first searched at half its size, and only the CASCADE_KEEP
    best candidates, under the flips they scored best with there, are scored on the coarse grid."""
    rows, tried = shortlist, None
    if min(index.shape) >= 2 * CASCADE_SIDE and len(shortlist) > CASCADE_KEEP:
        shift = int(np.ceil(max_shift / (2 * factor)))
        half = Aligner(half_size(query), shift, np.float32)
        scores = half.best_each([index.half_volume(row) for row in shortlist], [(row, shift, "half") for row in shortlist],
                                index.prepared, keep_fft=True)
        chosen = sorted(range(len(shortlist)), key=lambda i: -scores[i][0])[:CASCADE_KEEP]
        rows, tried = [shortlist[i] for i in chosen], sorted({scores[i][1] for i in chosen})
    shift = int(np.ceil(max_shift / factor))
    small = Aligner(query, shift, np.float32)
    scores = small.best_each([index.coarse_volume(row) for row in rows], [(row, shift) for row in rows], index.prepared,
                             keep_fft=True, flips=tried)
    on_coarse = dict(zip(rows, scores))
    return {row: [on_coarse[row][1]] for row in sorted(rows, key=lambda r: -on_coarse[r][0])[:keep]}


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
