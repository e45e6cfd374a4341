"""Calibration: held-out real studies' nearest-training similarities are the null for "not a copy".

A study's similarity to its nearest training study is the maximum over a gallery, so its Fisher z (atanh) follows
an extreme-value law; a Gumbel fitted to the holdout's z gives p-values far into the tail, where the empirical
p-value of a small holdout cannot reach (with 80 holdout studies it stops at 1/81). The report shows both.

Flag rule (family-wise error `alpha` over the whole set, Bonferroni over channels and studies): a study is
flagged when, in some channel, its Gumbel p-value is at most alpha / (channels x studies) and its score exceeds
every holdout score in that channel. Fresh studies are then flagged with probability about alpha / studies each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_HOLDOUT = 20  # fewer held-out studies cannot pin down a two-parameter tail
_EDGE = 1.0 - 1e-7


def fisher_z(scores) -> np.ndarray:
    return np.arctanh(np.clip(np.asarray(scores, np.float64), -_EDGE, _EDGE))


@dataclass(frozen=True)
class NullModel:
    """One channel's null: the holdout scores and the Gumbel fitted to their Fisher z."""

    channel: str
    scores: np.ndarray
    loc: float
    scale: float

    def p_value(self, scores) -> np.ndarray:
        """Parametric p-value: how often a study that is not a copy scores at least this high."""
        return stats.gumbel_r.sf(fisher_z(scores), self.loc, self.scale)

    def empirical_p(self, scores) -> np.ndarray:
        """(1 + holdout studies scoring at least as high) / (1 + holdout studies)."""
        s = np.atleast_1d(np.asarray(scores, np.float64))
        return (1 + (self.scores[None, :] >= s[:, None]).sum(1)) / (1 + len(self.scores))

    def threshold(self, level: float) -> float:
        """The score whose p-value is `level`, never below the highest holdout score."""
        return float(max(np.tanh(stats.gumbel_r.isf(level, self.loc, self.scale)), self.scores.max()))

    def summary(self, level: float) -> dict:
        return {"holdout_studies": len(self.scores), "holdout_median": float(np.median(self.scores)),
                "holdout_max": float(self.scores.max()), "gumbel_loc_z": self.loc, "gumbel_scale_z": self.scale,
                "threshold": self.threshold(level)}


def fit_null(channel: str, scores) -> NullModel:
    scores = np.asarray(scores, np.float64)
    loc, scale = stats.gumbel_r.fit(fisher_z(scores))
    return NullModel(channel, scores, float(loc), float(max(scale, 1e-6)))


def study_level(alpha: float, channels: int, studies: int) -> float:
    """Per-channel, per-study p-value level that keeps the set's family-wise error at `alpha`."""
    return alpha / (channels * max(studies, 1))
