"""Metrics that compare sets of images: Frechet distance, recall per class, noise level."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics.regression import compute_ms_ssim
from scipy import linalg, ndimage, stats


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a (N, D) and b (M, D) (Heusel et al. 2017)."""
    return frechet_to(b)(a)


def frechet_to(b: np.ndarray):
    """The Frechet distance to feature set b as a function of another set a, b's Gaussian fitted once.

    tr sqrt(cov_a cov_b) is taken as the sum of the square roots of the eigenvalues of the symmetric
    cov_b^1/2 cov_a cov_b^1/2 (the same spectrum): exact for the singular covariances of small sets, where a general
    matrix square root is slow and can turn complex."""
    mu_b, cov_b = b.mean(0), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = linalg.eigh(cov_b)
    half_b = (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    def distance(a: np.ndarray) -> float:
        mu_a, cov_a = a.mean(0), np.atleast_2d(np.cov(a, rowvar=False))
        root_trace = np.sqrt(np.clip(linalg.eigvalsh(half_b @ cov_a @ half_b), 0, None)).sum()
        return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * root_trace)

    return distance


def frechet_ratio_resamples(synthetic: np.ndarray, holdout: np.ndarray, floor: float, per_study: int,
                            resamples: int, seed: int) -> np.ndarray:
    """The Frechet ratio Frechet(synthetic, holdout) / `floor` (the real reference's distance to holdout) with the
    synthetic studies drawn again with replacement (a study's `per_study` feature rows move together) and the real
    sets held: how much the ratio owes to which synthetic studies happened to be drawn. The same seed draws the same
    studies for every call with a set of the same size, so resamples of several planes can be averaged row by row."""
    if floor <= 0:
        return np.full(resamples, np.nan)
    to_holdout = frechet_to(holdout)
    rng = np.random.default_rng(seed)
    n = len(synthetic) // per_study
    studies = synthetic.reshape(n, per_study, -1)
    return np.array([to_holdout(studies[rng.integers(0, n, n)].reshape(-1, synthetic.shape[1])) / floor
                     for _ in range(resamples)])


def spread_interval(value: float | None, resamples, z: float = 1.96) -> tuple[float | None, list[float | None]]:
    """The SD of bootstrap `resamples` (NaNs dropped) and the normal 95% interval it gives around `value`, clipped at
    zero: (None, [None, None]) without a value or with fewer than two finite resamples."""
    v = np.asarray(resamples, np.float64)
    v = v[np.isfinite(v)]
    if value is None or len(v) < 2:
        return None, [None, None]
    sd = float(v.std(ddof=1))
    return sd, [max(0.0, value - z * sd), value + z * sd]


def recall_per_class(predicted: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    return np.array([(predicted[truth == c] == c).mean() if np.any(truth == c) else np.nan for c in range(classes)])


def balanced_accuracy(predicted: np.ndarray, truth: np.ndarray, classes: int) -> float:
    return float(np.nanmean(recall_per_class(predicted, truth, classes)))


def noise_level(images: np.ndarray) -> np.ndarray:
    """Per-image high-frequency energy: the standard deviation of the Laplacian (N, C, *spatial) -> (N,)."""
    return np.array([ndimage.laplace(img[0].astype(np.float64)).std() for img in images])


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int = 10, size: int = 500,
                              seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / d + 1)^3, mean and SD over random subsets.

    Unlike the Frechet distance it has no bias from the sample size, so small sets compare fairly."""
    rng = np.random.default_rng(seed)
    m = min(len(a), len(b), size)
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        off = m * (m - 1)
        values.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def mean_interval(values, bounds: tuple[float, float] | None = None, z: float = 1.96) -> dict:
    """Mean with a normal-approximation 95% interval (a t interval for fewer than 30 values), clipped to the metric's
    `bounds`; NaNs dropped."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": None, "interval": [None, None], "n": 0}
    if len(v) == 1:
        return {"mean": float(v[0]), "interval": [float(v[0]), float(v[0])], "n": 1}
    half = (stats.t.ppf(0.975, len(v) - 1) if len(v) < 30 else z) * v.std(ddof=1) / np.sqrt(len(v))
    low, high = v.mean() - half, v.mean() + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": float(v.mean()), "interval": [float(low), float(high)], "n": int(len(v))}


def ms_ssim_setup(shape: tuple[int, ...]) -> tuple[int, tuple[float, ...]]:
    """Kernel size and scale weights for MS-SSIM that fit a small grid: up to 3 scales (Wang et al.'s first three
    weights, renormalised), the largest odd kernel <= 7 that MONAI accepts on the smallest side."""
    side = min(shape)
    base = (0.0448, 0.2856, 0.3001)
    for scales in (3, 2, 1):
        div = max(1, scales - 1) ** 2
        kernel = min(7, side // div, (side >> (scales - 1)) - 1)  # MONAI's check, and the coarsest scale must fit it
        kernel -= 1 - kernel % 2
        if kernel >= 3 and side // div > kernel - 1:
            w = np.array(base[:scales]) / sum(base[:scales])
            return kernel, tuple(float(x) for x in w)
    raise ValueError(f"a {shape} grid is too small for MS-SSIM")


def pairwise_ms_ssim(images: np.ndarray, pairs: int, seed: int = 0) -> np.ndarray:
    """MS-SSIM (MONAI) of up to `pairs` random distinct pairs from images (N, 1, *spatial) in model units [-1, 1]."""
    n = len(images)
    if n < 2:
        return np.array([])
    rng = np.random.default_rng(seed)
    every = np.array([(i, j) for i in range(n) for j in range(i + 1, n)])
    chosen = every[rng.choice(len(every), min(pairs, len(every)), replace=False)]
    unit = torch.from_numpy(np.clip((images.astype(np.float32) + 1) / 2, 0, 1))
    kernel, weights = ms_ssim_setup(images.shape[2:])
    out = []
    for start in range(0, len(chosen), 64):
        part = chosen[start : start + 64]
        out.append(compute_ms_ssim(unit[part[:, 0]], unit[part[:, 1]], spatial_dims=images.ndim - 2, data_range=1.0,
                                   kernel_size=kernel, weights=weights).reshape(-1).numpy())
    return np.concatenate(out)


def intensity_distance(a: np.ndarray, b: np.ndarray, voxels: int = 200_000, seed: int = 0) -> float:
    """Wasserstein-1 distance between two pooled intensity samples (model units), each subsampled to `voxels`."""
    rng = np.random.default_rng(seed)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    a = a if len(a) <= voxels else rng.choice(a, voxels, replace=False)
    b = b if len(b) <= voxels else rng.choice(b, voxels, replace=False)
    return float(stats.wasserstein_distance(a, b))
