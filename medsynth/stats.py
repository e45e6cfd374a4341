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


def recall_at_specificity(positive, negative, specificity: float) -> float:
    """The highest recall a threshold on the scores reaches while keeping at least `specificity` of the negatives
    below it (a point read off the ROC curve): calling a positive when its score beats the negatives' ceil(s * n)-th
    lowest score. Two models compared at the same specificity differ in what they tell apart, not in how readily they
    call the positive class."""
    pos, neg = np.asarray(positive, np.float64), np.sort(np.asarray(negative, np.float64))
    need = int(np.ceil(specificity * len(neg) - 1e-9))
    if need <= 0:
        return 1.0
    return float(np.mean(pos > neg[min(need, len(neg)) - 1]))
