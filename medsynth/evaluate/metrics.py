"""Metrics that compare sets of images: Frechet distance, recall per class, noise level."""

from __future__ import annotations

import numpy as np
from scipy import linalg, ndimage


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a (N, D) and b (M, D) (Heusel et al. 2017)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def recall_per_class(predicted: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    return np.array([(predicted[truth == c] == c).mean() if np.any(truth == c) else np.nan for c in range(classes)])


def balanced_accuracy(predicted: np.ndarray, truth: np.ndarray, classes: int) -> float:
    return float(np.nanmean(recall_per_class(predicted, truth, classes)))


def noise_level(images: np.ndarray) -> np.ndarray:
    """Per-image high-frequency energy: the standard deviation of the Laplacian (N, C, *spatial) -> (N,)."""
    return np.array([ndimage.laplace(img[0].astype(np.float64)).std() for img in images])
