"""Fidelity: how far synthetic studies lie from real unseen ones, in two feature spaces learnt from the training
studies with different objectives (a contrastive encoder; a supervised classifier), per plane for 3D, next to the
same distance for real training studies (the floor) and as a ratio to it.

For class runs the sets are compared class for class: the synthetic set and the real reference are drawn to the
holdout's class shares (over the classes the synthetic set has). A set made to boost a rare class holds far more of
it than real data does, and a feature space trained to tell the classes apart would otherwise measure that mix, not
the images (on the CT phantoms at 4x, 116x the floor as generated against 35x class for class: docs/benchmarks.md,
session 29).
"""

from __future__ import annotations

import numpy as np

from medsynth.config import EvaluateConfig
from medsynth.evaluation import classifier as cls
from medsynth.evaluation import metrics
from medsynth.evaluation.studies import PLANES, StudySet, plane_slices
from medsynth.models import encoder


def compared(train: StudySet, holdout: StudySet, synthetic: StudySet, seed: int) -> tuple[StudySet, StudySet, StudySet, dict]:
    """(holdout, synthetic, reference) as the distances compare them, and how many of each class: with classes on
    every set, holdout keeps the classes all three share, and synthetic and the reference (drawn from train) take
    holdout's class shares, as many studies as the smaller of the two allows; else synthetic whole and a random
    reference of its size."""
    rng = np.random.default_rng(seed)
    kinds = (np.intersect1d(np.intersect1d(np.unique(synthetic.classes), np.unique(holdout.classes)),
                            np.unique(train.classes))
             if all(v.classes is not None for v in (train, holdout, synthetic)) else np.array([]))
    if not len(kinds):
        n = min(len(synthetic.images), len(train.images))
        return holdout, synthetic, train.subset(rng.choice(len(train.images), n, replace=False)), {"class_matched": False}
    holdout = holdout.subset(np.flatnonzero(np.isin(holdout.classes, kinds)))
    share = {c: float(np.mean(holdout.classes == c)) for c in kinds}
    n = min(min(int((v.classes == c).sum()) for v in (synthetic, train)) / share[c] for c in kinds)
    take = {c: max(1, int(round(n * share[c]))) for c in kinds}
    drawn = [v.subset(np.concatenate([rng.choice(np.flatnonzero(v.classes == c), k, replace=False)
                                      for c, k in take.items()])) for v in (synthetic, train)]
    counts = {str(int(c)): {"holdout": int((holdout.classes == c).sum()), "synthetic": k, "reference": k}
              for c, k in take.items()}
    return holdout, drawn[0], drawn[1], {"class_matched": True, "classes": counts}


def fidelity(train: StudySet, holdout: StudySet, synthetic: StudySet, s: EvaluateConfig, show_progress: bool) -> dict:
    """Frechet distance and KID per plane in the contrastive encoder's space and in second_space's, of the synthetic
    studies and of real training studies (the reference) to holdout, compared class for class (`compared`, recorded
    per plane), and the synthetic distance as a ratio to the reference's (the floor)."""
    holdout, synthetic, reference, record = compared(train, holdout, synthetic, s.seed)
    planes = PLANES if train.images.ndim == 5 else {"image": None}
    sets = (("train", train.images), ("holdout", holdout.images), ("synthetic", synthetic.images),
            ("reference", reference.images))
    out = {}
    for plane, axis in planes.items():
        model = encoder.train_encoder(plane_slices(train.images, axis, s.slices), steps=s.encoder_steps, seed=s.seed,
                                      show_progress=show_progress)
        per_study = len(plane_slices(train.images[:1], axis, s.slices))
        out[plane] = distances({k: encoder.embed(model, plane_slices(v, axis, s.slices)) for k, v in sets}, per_study, s)
        embed = second_space(train, axis, s)
        out[plane]["second"] = distances({k: embed(plane_slices(v, axis, s.slices)) for k, v in sets}, per_study, s)
        out[plane]["compared"] = record
    return out


def distances(feats: dict[str, np.ndarray], per_study: int, s: EvaluateConfig) -> dict:
    """Frechet distance and KID of synthetic and of real reference features to holdout's, standardised on training
    features, and synthetic's as a ratio to the real floor (None where the floor is not above zero), with the
    ratio's SD over resampled synthetic studies (`per_study` feature rows per study) and the 95% interval it gives."""
    mu, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    z = {k: (v - mu) / sd for k, v in feats.items()}   # features in SD units of the training slices
    kid_syn, kid_ref = (metrics.kernel_inception_distance(z[k], z["holdout"], seed=s.seed) for k in ("synthetic", "reference"))
    to_holdout = metrics.frechet_to(z["holdout"])
    fd_syn, fd_ref = to_holdout(z["synthetic"]), to_holdout(z["reference"])
    ratio = fd_syn / fd_ref if fd_ref > 0 else None
    boot = metrics.frechet_ratio_resamples(z["synthetic"], z["holdout"], fd_ref, per_study, s.resamples, s.seed)
    sd, interval = metrics.spread_interval(ratio, boot)
    return {"frechet_synthetic": fd_syn, "frechet_real": fd_ref, "frechet_ratio": ratio, "frechet_ratio_sd": sd,
            "frechet_ratio_interval": interval, "frechet_ratio_resamples": [round(float(v), 4) for v in boot],
            "kid_synthetic": kid_syn[0], "kid_synthetic_sd": kid_syn[1], "kid_real": kid_ref[0], "kid_real_sd": kid_ref[1],
            "kid_ratio": kid_syn[0] / kid_ref[0] if kid_ref[0] > 1e-6 else None}


def second_space(train: StudySet, axis: int | None, s: EvaluateConfig):
    """An embedding independent of the contrastive encoder: a supervised classifier of the training studies' classes
    (class runs), else a classifier of whether a slice is upside down; its 32-d features embed slices."""
    slices = plane_slices(train.images, axis, s.slices)
    if train.classes is not None and len(np.unique(train.classes)) > 1:
        labels = np.repeat(train.classes, len(slices) // len(train.images))
        model = cls.train_classifier(slices, labels, int(train.classes.max()) + 1, seed=s.seed, steps=s.steps)
    else:
        upside = np.random.default_rng(s.seed).random(len(slices)) < 0.5
        slices = np.where(upside.reshape(-1, *[1] * (slices.ndim - 1)), np.flip(slices, axis=-2), slices)
        model = cls.train_classifier(slices, upside.astype(np.int64), 2, seed=s.seed, steps=s.steps)
    return lambda images: cls.predict(model, images)[1]


SECOND_SPACE = ("a supervised classifier (MONAI Classifier trunk, 32-d) trained on the training studies' classes, or, "
                "for runs without classes, on telling upright from upside-down training slices")
