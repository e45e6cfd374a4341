"""The real studies a run saw: its recorded training and holdout splits, preprocessed exactly as training did.

The audit compares synthetic studies against them and calibrates on the holdout; the evaluation measures fidelity
and utility on them. Both ask here, so neither depends on the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from medsynth.data.catalog import ref_from_row
from medsynth.data.preprocess import PreprocessSpec, preprocess
from medsynth.data.readers import load_study
from medsynth.errors import MedsynthError
from medsynth.progress import progress_iter
from medsynth.runs.loaded import LoadedRun


@dataclass
class RealSplit:
    """One split of a run's real studies on the model grid."""

    ids: list[str]
    images: torch.Tensor                   # (N, C, *spatial) model units
    labels: np.ndarray | None = None       # (N, *spatial) uint8 label maps (mask runs), in the run's compact ids
    classes: list[str] = field(default_factory=list)   # the class column's values ([] without classes)
    conditions: dict[str, list] = field(default_factory=dict)   # each extra condition column's raw values


def load_real(loaded: LoadedRun, masked: bool, show_progress: bool, min_holdout: int,
              purpose: str) -> tuple[RealSplit, RealSplit]:
    """The run's training and holdout studies, refusing a run whose holdout is smaller than `purpose` needs."""
    catalog = loaded.folder.read_catalog()
    if "split" not in catalog.columns or not (catalog["split"] == "holdout").any():
        raise MedsynthError(f"the run {loaded.path} has no recorded holdout split, which the audit and evaluation "
                            "compare against; retrain with data.holdout > 0 (e.g. --set data.holdout=0.2).")
    holdout = int((catalog["split"] == "holdout").sum())
    if holdout < min_holdout:
        raise MedsynthError(f"the run's holdout split has {holdout} studies but {purpose} needs at least {min_holdout}; "
                            "retrain with a larger data.holdout or more studies.")
    spec = PreprocessSpec.from_config(loaded.cfg.data)
    names = {int(k): v for k, v in loaded.meta.get("label_names", {}).items()} or None
    column = loaded.cfg.conditioning.class_column
    parts = {}
    for split in ("train", "holdout"):
        rows = catalog[catalog["split"] == split]
        ids, images, labels = [], [], []
        for _, row in progress_iter(list(rows.iterrows()), f"loading {split}", enabled=show_progress):
            ready = preprocess(load_study(ref_from_row(row), names if masked else None), spec)
            ids.append(str(row["study_id"]))
            images.append(ready.image)
            labels.append(loaded.spec.compact(ready.label[0].numpy()).astype(np.uint8)  # as training saw them
                          if masked and ready.label is not None else None)
        classes = rows[column].astype(str).tolist() if column else []
        conditions = {c.name: rows[c.name].tolist() for c in loaded.extras if c.name in rows.columns}
        parts[split] = RealSplit(ids, torch.stack(images), np.stack(labels) if masked else None, classes, conditions)
    return parts["train"], parts["holdout"]
