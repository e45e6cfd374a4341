"""Evaluation per extra condition (#19): does a synthetic study show the sex, age or other condition it was asked for?

A judge trained on the real training studies reads each condition back from the images, and its figure on synthetic
studies (against the requested value) sits next to the same figure on real holdout (against the true value):
- a categorical column: a MONAI Classifier; accuracy per requested value next to its recall on real holdout;
- a covariate: a MONAI Classifier trunk with one output regressing the standardised value (MSE); mean absolute error
  (in the covariate's own units) and Pearson r against the requested value, next to the same on real holdout.
Studies whose value is blank are left out of both training and scoring.
"""

from __future__ import annotations

import numpy as np

from medsynth.conditioning import Column
from medsynth.errors import MedsynthError
from medsynth.evaluation import classifier as cls
from medsynth.evaluation import metrics


def encoded_or_nan(column: Column, value) -> float:
    try:
        return column.encode(value, extrapolate=True)
    except MedsynthError:     # a holdout value training never saw: not scored
        return float("nan")


def known(values: list, column: Column) -> tuple[np.ndarray, np.ndarray]:
    """(rows with a value the run knows, their encoded values) of a column's raw values."""
    encoded = np.array([encoded_or_nan(column, v) for v in values], dtype=np.float64)
    rows = np.flatnonzero(~np.isnan(encoded))
    return rows, encoded[rows]


def categorical(column: Column, train, holdout, synthetic, s) -> dict:
    k = len(column.values)
    rows, y = known(train.conditions[column.name], column)
    model = cls.train_classifier(train.images[rows], y.astype(np.int64), k, seed=s.seed, steps=s.steps, batch_size=16)
    out = {"judge": "MONAI Classifier trained on the run's training studies", "values": {}}
    scores = {}
    for name, study in (("holdout", holdout), ("synthetic", synthetic)):
        r, truth = known(study.conditions[column.name], column)
        predicted = cls.predict(model, study.images[r])[0] if len(r) else np.array([], int)
        scores[name] = (metrics.recall_per_class(predicted, truth.astype(np.int64), k) if len(r) else np.full(k, np.nan),
                        np.bincount(truth.astype(np.int64), minlength=k))
    for v, value in enumerate(column.values):
        out["values"][value] = {name: None if np.isnan(recall[v]) else float(recall[v]) for name, (recall, _) in scores.items()}
        out["values"][value]["synthetic_studies"] = int(scores["synthetic"][1][v])
    return out


def continuous(column: Column, train, holdout, synthetic, s) -> dict:
    rows, y = known(train.conditions[column.name], column)
    model = cls.train_regressor(train.images[rows], y, seed=s.seed, steps=s.steps)
    sd = column.stats[1]
    out = {"judge": "MONAI Classifier trunk regressing the value, trained on the run's training studies",
           "units": "the covariate's own"}
    for name, study in (("holdout", holdout), ("synthetic", synthetic)):
        r, truth = known(study.conditions[column.name], column)
        if len(r) < 2:
            out[name] = {"mae": None, "pearson_r": None, "studies": int(len(r))}
            continue
        predicted = cls.predict_value(model, study.images[r])
        r_value = float(np.corrcoef(predicted, truth)[0, 1]) if np.std(truth) > 0 and np.std(predicted) > 0 else None
        out[name] = {"mae": float(np.abs(predicted - truth).mean() * sd), "pearson_r": r_value, "studies": int(len(r))}
    return out


def condition_fidelity(extras: tuple[Column, ...], train, holdout, synthetic, s) -> dict:
    """Each extra condition read back by a judge trained on the real training studies: synthetic next to holdout."""
    out = {}
    for column in extras:
        if column.name not in (synthetic.conditions or {}):
            continue      # a set made without this column's values (another generator's) is not judged on it
        out[column.name] = (continuous if column.continuous else categorical)(column, train, holdout, synthetic, s)
    return out
