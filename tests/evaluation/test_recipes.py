"""The recipe family's lifts: recall at the real-only model's specificity does not credit a threshold shift."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.config import EvaluateConfig
from medsynth.errors import MedsynthError
from medsynth.evaluation.studies import StudySet
from medsynth.evaluation.recipes import MIXES, mixed, recipe_rows, scored, segmentation_sets, verdict
from medsynth.stats import recall_at_specificity


def test_recall_at_specificity_reads_the_roc_curve_where_enough_negatives_stay_below():
    rare, other = [0.9, 0.8, 0.3], [0.1, 0.2, 0.5, 0.6]
    assert recall_at_specificity(rare, other, 0.5) == 1.0          # threshold above 0.2: all three rare studies
    assert recall_at_specificity(rare, other, 0.75) == 2 / 3       # above 0.5: 0.9 and 0.8
    assert recall_at_specificity(rare, other, 1.0) == 2 / 3        # above every negative (0.6)
    assert recall_at_specificity(rare, other, 0.0) == 1.0


def family_scores(truth: np.ndarray, rare_probs: dict[str, list[np.ndarray]]) -> dict:
    """scored(...) of each training set's models (one per seed) from their rare-class probabilities, two classes."""
    return {("r", name): [scored(np.stack([p, 1 - p], 1), truth, 0, 2) for p in runs]
            for name, runs in rare_probs.items()}


def test_a_model_that_only_calls_the_rare_class_more_often_gains_recall_but_no_matched_recall():
    """The same ranking pushed towards the rare class (a monotone map of the probabilities): the recall at the model's
    own decision rises, the AUC and the recall at real only's specificity do not move, so that verdict is not helps."""
    rng = np.random.default_rng(0)
    truth = (rng.random(200) > 0.3).astype(np.int64)                       # class 0 rare
    real = [np.clip(0.35 * (truth == 0) + rng.normal(0.3, 0.15, 200), 0.01, 0.99) for _ in range(4)]
    eager = [np.sqrt(p) for p in real]                                     # same order, more studies above 0.5
    scores = family_scores(truth, {"real only": real, **{f"real + synthetic ({m})": eager for m in MIXES}})
    rows = recipe_rows(scores, "r", ["real only", *[f"real + synthetic ({m})" for m in MIXES]], "lesion", truth == 0)
    row = rows[MIXES[0]]
    assert row["lift"]["mean"] > 0.1 and row["lift"]["interval"][0] > 0    # the argmax recall "helps"
    assert abs(row["auc_lift"]["mean"]) < 1e-12
    assert abs(row["matched_lift"]["mean"]) < 1e-12                        # nothing gained at the same false positives
    assert verdict({m: r["matched_lift"] for m, r in rows.items()}) == "neutral"
    assert 0 < row["matched_lift"]["specificity"] < 1


def test_a_model_that_separates_the_classes_better_gains_recall_at_real_only_specificity():
    rng = np.random.default_rng(1)
    truth = (rng.random(200) > 0.3).astype(np.int64)
    noise = [rng.normal(0.3, 0.15, 200) for _ in range(4)]
    real = [np.clip(0.2 * (truth == 0) + n, 0.01, 0.99) for n in noise]
    better = [np.clip(0.5 * (truth == 0) + n, 0.01, 0.99) for n in noise]
    scores = family_scores(truth, {"real only": real, **{f"real + synthetic ({m})": better for m in MIXES}})
    rows = recipe_rows(scores, "r", ["real only", *[f"real + synthetic ({m})" for m in MIXES]], "lesion", truth == 0)
    assert all(r["matched_lift"]["interval"][0] > 0 for r in rows.values())
    assert verdict({m: r["matched_lift"] for m, r in rows.items()}) == "helps"


def test_a_dose_adds_that_share_of_each_mix_and_one_is_the_mix_as_named():
    train = StudySet(np.zeros((40, 4, 4), np.float32), None, np.array([0] * 10 + [1] * 30))   # rare class 0, gap 20
    synthetic = StudySet(np.ones((60, 4, 4), np.float32), None, np.array([0] * 50 + [1] * 10))
    added = lambda mix, boost, dose: mixed(train, synthetic, mix, boost, dose)[3]  # noqa: E731
    assert (added("balance", 0, 1.0), added("balance", 0, 0.5), added("balance", 0, 0.01)) == (20, 10, 1)
    assert (added("fixed", 40, 1.0), added("fixed", 40, 0.25), added("fixed", 0, 0.5)) == (40, 10, 25)
    x, y, rare, n = mixed(train, synthetic, "balance", 0, 0.5)
    assert rare == 0 and len(x) == 50 and (y[40:] == 0).all() and (x[40:] == 1).all()
    pairs = StudySet(np.ones((12, 4, 4), np.float32), np.ones((12, 4, 4), np.int64), None)
    real = StudySet(np.zeros((8, 4, 4), np.float32), np.zeros((8, 4, 4), np.int64), None)
    sizes = {k: len(x) - 8 for k, (x, _) in segmentation_sets(real, pairs, 0, 0.5).items() if k != "synthetic only"}
    assert sizes == {"real only": 0, "real + synthetic (all)": 6, "real + synthetic (fixed)": 2}


@pytest.mark.parametrize("dose", [0, -0.5, 1.5])
def test_a_dose_outside_zero_to_one_is_refused_in_one_sentence(dose):
    with pytest.raises(MedsynthError, match="dose"):
        EvaluateConfig(dose=dose)
