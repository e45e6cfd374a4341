"""Shared by the quality benchmarks (bench_quality, its recipe family, bench_private): a MedMNIST-style file's
splits and a synthetic set as arrays in model units, and the plain classification utility over seeds."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medsynth.data.catalog import ref_from_row
from medsynth.data.preprocess import PreprocessSpec, preprocess
from medsynth.data.readers import load_study, scan
from medsynth.evaluation.classifier import predict, train_classifier
from medsynth.evaluation.metrics import balanced_accuracy, recall_per_class
from medsynth.runs import SetFolder


def real_arrays(catalog: pd.DataFrame, cfg) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Model-grid images in [-1, 1] and class ids for each official split (train / val / test)."""
    spec = PreprocessSpec.from_config(cfg.data)
    out = {}
    for split, rows in catalog.groupby("source_split"):
        images = np.stack([preprocess(load_study(ref_from_row(r)), spec).image.numpy() for _, r in rows.iterrows()])
        out[split] = (images, rows["class"].astype(int).to_numpy())
    return out


def synthetic_arrays(folder: Path, run, ids: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images in model units and class ids (an edited-real set's studies preprocessed as real ones are); `ids` maps
    the set's class names to the data file's ids (a run trained on a catalog ingested with --class-names calls its
    classes by name), else the names are the ids."""
    table = pd.read_csv(SetFolder(folder).table, dtype={"class": str})
    if "kind" in table and (table["kind"] == "edited-real").all():      # on the real studies' own grids
        spec, refs = PreprocessSpec.from_config(run.cfg.data), {r.study_id: r for r in scan(folder).refs}
        images = np.stack([preprocess(load_study(refs[s]), spec).image.numpy() for s in table["study_id"]])
    else:
        images = np.stack([run.intensity.to_unit(np.asarray(nib.load(folder / f).dataobj, np.float32)[None])
                           for f in table["image"]])
    return images, np.array([int(c) if c.isdigit() else (ids or {})[c] for c in table["class"]])


def utility(train_x, train_y, test_x, test_y, classes, rare, seeds, steps) -> tuple[np.ndarray, np.ndarray]:
    """(balanced accuracy, rare-class recall) on test: mean and 95% interval half-width over `seeds` classifiers, each
    trained for `steps` batches whatever the set's size."""
    scores = []
    for seed in range(seeds):
        predicted, _ = predict(train_classifier(train_x, train_y, classes, seed=seed, steps=steps), test_x)
        scores.append((balanced_accuracy(predicted, test_y, classes), recall_per_class(predicted, test_y, classes)[rare]))
    scores = np.array(scores)
    return scores.mean(0), 1.96 * scores.std(0, ddof=1) / np.sqrt(seeds) if seeds > 1 else np.zeros(2)
