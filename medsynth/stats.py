"""Statistics that both the privacy audit and the evaluation use (they share a layer and never import each other)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def roc_auc(positive, negative) -> float:
    """Probability that a random positive outscores a random negative (ties count half): the area under the ROC curve,
    which no choice of threshold changes. Mann-Whitney U over both groups' ranks, so large groups cost no pairwise
    matrix."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    return float(stats.mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))   # U counts ties half
