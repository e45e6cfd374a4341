"""Calibration: held-out real studies' nearest-training similarities are the null for "not a copy".

A study's similarity to its nearest training study is the maximum over a gallery, so its Fisher z (atanh) follows
an extreme-value law; a Gumbel fitted to the holdout's z gives p-values far into the tail, where the empirical
p-value of a small holdout cannot reach (with 80 holdout studies it stops at 1/81). The report shows both.

The rule (Rule), in words: each channel gives a study a p-value (how often a real study that was never trained on
scores this high against the training set); the study's combined p-value is the smallest of them times the number
of channels (Bonferroni over channels, so the combination never overstates the evidence). A study is flagged when
its combined p-value is at most `study_rate`: a real study that was never trained on is flagged that often at most.
The set fails when some study is beyond doubt (combined p-value at most alpha / studies: a set without copies has
one with probability at most alpha) or when more studies are flagged than chance explains (binomial tail at most
alpha given the set's size and `study_rate`).
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
        """The score whose p-value is `level`."""
        return float(np.tanh(stats.gumbel_r.isf(level, self.loc, self.scale)))

    def summary(self, level: float) -> dict:
        return {"holdout_studies": len(self.scores), "holdout_median": float(np.median(self.scores)),
                "holdout_max": float(self.scores.max()), "gumbel_loc_z": self.loc, "gumbel_scale_z": self.scale,
                "threshold": self.threshold(level)}


def fit_null(channel: str, scores) -> NullModel:
    scores = np.asarray(scores, np.float64)
    loc, scale = stats.gumbel_r.fit(fisher_z(scores))
    return NullModel(channel, scores, float(loc), float(max(scale, 1e-6)))


@dataclass(frozen=True)
class Rule:
    """The flagging and verdict rule (see the module's docstring)."""

    study_rate: float      # a never-trained-on study is flagged at most this often
    alpha: float           # the set-level error: a set without copies fails at most this often
    channels: int

    def p_values(self, scores: dict[str, np.ndarray], nulls: dict[str, NullModel]) -> np.ndarray:
        """Each study's combined p-value: the smallest over channels, times the number of channels (at most 1)."""
        smallest = np.min([nulls[c].p_value(s) for c, s in scores.items()], axis=0)
        return np.minimum(1.0, self.channels * smallest)

    def flagged(self, p: np.ndarray) -> np.ndarray:
        return p <= self.study_rate

    def certain(self, p: np.ndarray) -> np.ndarray:
        """Beyond doubt: at this p-value a set of this size without copies holds such a study at most alpha often."""
        return p <= self.alpha / max(len(p), 1)

    def excess_p(self, flagged: int, studies: int) -> float:
        """How often chance alone flags at least this many of `studies` (binomial tail at `study_rate`)."""
        return float(stats.binom.sf(flagged - 1, studies, self.study_rate)) if flagged else 1.0

    @property
    def channel_level(self) -> float:
        """The p-value at which one channel alone flags a study."""
        return self.study_rate / self.channels

    def describe(self) -> str:
        return (f"a study is flagged when its combined p-value (the smallest channel p-value, from a Gumbel fitted to "
                f"the held-out real studies, times the {self.channels} channels) is at most {self.study_rate}; the set "
                f"fails when a study's combined p-value is at most alpha / studies (alpha {self.alpha}) or when more "
                f"studies are flagged than chance explains (binomial tail at most {self.alpha})")
