"""What a run-less audit compares: any synthetic studies against any training and holdout studies.

`medsynth audit SYNTH --train DATA --holdout DATA` takes each folder through the data layer's readers (NIfTI files
or folders, MSD / nnU-Net layouts, DICOM, a medsynth synthetic set, an ingest folder), or one dataset with a split
(`--train DATA --split CSV`, or an ingest folder whose split.csv says which studies were trained on). Every study is
brought onto one audit grid chosen from the training studies (their median spacing and extent, coarsened when that
grid would exceed MAX_AUDIT_VOXELS) with the same preprocessing on every side (RAS orientation, resampling, the
modality's intensity scaling). Different modalities or channel counts are refused in one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medsynth.data.catalog import apply_split, is_catalog_folder, read_catalog_folder, ref_from_row
from medsynth.data.preprocess import PreprocessSpec, preprocess
from medsynth.data.readers import load_study, scan
from medsynth.data.study import Study
from medsynth.errors import MedsynthError
from medsynth.privacy.gallery import Volumes, residual
from medsynth.progress import progress_iter
from medsynth.runs.layout import SetFolder
from medsynth.runs.synthset import read_synthetic_set

MAX_AUDIT_VOXELS = {2: 256**2, 3: 64**3}


def read_studies(path: str | Path, modality: str | None, show_progress: bool, what: str) -> list[Study]:
    """Every study under `path`: a medsynth synthetic set by its samples.csv, anything else by the data readers."""
    path = Path(path).expanduser()
    if SetFolder(path).is_set():
        sset = read_synthetic_set(path)
        rows = [row for _, row in sset.table.iterrows()]
        return [sset.load(row) for row in progress_iter(rows, f"reading {what}", enabled=show_progress)]
    if is_catalog_folder(path):
        catalog, names = read_catalog_folder(path)
        return [load_study(ref_from_row(r), names) for _, r in progress_iter(list(catalog.iterrows()), f"reading {what}",
                                                                              enabled=show_progress)]
    found = scan(path, modality)
    return [load_study(ref, found.label_names) for ref in progress_iter(found.refs, f"reading {what}",
                                                                          enabled=show_progress)]


def split_studies(path: str | Path, split: str | Path | None, modality: str | None,
                  show_progress: bool) -> tuple[list[Study], list[Study]]:
    """One dataset's training and holdout studies: by the split file given (studies it does not list take no part),
    or by an ingest folder's own split."""
    path = Path(path).expanduser()
    if split is None and not is_catalog_folder(path):
        raise MedsynthError("the audit needs held-out real studies to calibrate on: give --holdout DATA, or --split "
                            "CSV (study_id,split) for the --train data, or an ingest folder with its split.csv.")
    studies = read_studies(path, modality, show_progress, "studies")
    if split is None:
        catalog, _ = read_catalog_folder(path)
        assigned = dict(zip(catalog["study_id"], catalog["split"]))
    else:
        ids = pd.DataFrame({"study_id": [str(s.study_id) for s in studies]})
        assigned = dict(zip(ids["study_id"], apply_split(ids, split, complete=False)["split"]))
    parts = [[s for s in studies if assigned.get(str(s.study_id)) == name] for name in ("train", "holdout")]
    return parts[0], parts[1]


@dataclass
class AuditInputs:
    """The three sides of a run-less audit on the audit grid."""

    train: Volumes
    holdout: Volumes
    synthetic: Volumes
    masked: bool
    spec: PreprocessSpec
    modality: str


def audit_grid(studies: list[Study]) -> PreprocessSpec:
    """The training studies' median spacing and extent, coarsened (spacing scaled up alike on every axis) until the
    grid holds at most MAX_AUDIT_VOXELS."""
    spacing = np.median([s.spacing for s in studies], axis=0)
    extent = np.median([np.array(s.spatial_shape) * np.array(s.spacing) for s in studies], axis=0)
    limit = MAX_AUDIT_VOXELS[len(spacing)]
    factor = max(1.0, (np.prod(extent / spacing) / limit) ** (1 / len(spacing)))
    spacing = spacing * factor
    shape = np.maximum(np.round(extent / spacing), 8).astype(int)
    while np.prod(shape) > limit:      # rounding up can leave it a little over
        shape = np.maximum(shape - 1, 8)
    return PreprocessSpec(spacing=tuple(round(float(v), 4) for v in spacing), shape=tuple(int(v) for v in shape))


def check_alike(sides: dict[str, list[Study]]) -> str:
    """The one modality and channel count of all studies, refused in one sentence when they differ. Studies of
    unknown modality (OT: plain NIfTI says nothing) are taken to be of the modality the other studies state."""
    for name, studies in sides.items():
        if not studies:
            raise MedsynthError(f"the {name} side of the audit holds no studies; check its path (and --split).")
    modalities = {name: sorted({s.modality for s in studies}) for name, studies in sides.items()}
    known = {m for ms in modalities.values() for m in ms} - {"OT"}
    if len(known) == 1:   # plain NIfTI does not record its modality (OT): such studies take the others' modality
        for studies in sides.values():
            for study in studies:
                study.modality = next(iter(known))
    elif len(known) > 1:
        raise MedsynthError("the audit compares one modality, but the studies are "
                            + ", ".join(f"{name} {'/'.join(ms)}" for name, ms in modalities.items())
                            + "; give --modality if the files' own modality is wrong, or audit one modality at a time.")
    channels = {name: sorted({s.image.shape[0] for s in studies}) for name, studies in sides.items()}
    if len({c for cs in channels.values() for c in cs}) > 1:
        raise MedsynthError("the audit compares studies with the same channels, but the channel counts are "
                            + ", ".join(f"{name} {cs}" for name, cs in channels.items()) + ".")
    dims = {s.spatial_dims for studies in sides.values() for s in studies}
    if len(dims) > 1:
        raise MedsynthError("the audit compares 2D with 2D and 3D with 3D, but the studies mix both.")
    return next(iter(sides["training"])).modality


def on_grid(studies: list[Study], spec: PreprocessSpec, masked: bool) -> Volumes:
    ready = [preprocess(s, spec) for s in studies]
    images = torch.stack([r.image for r in ready])
    labels = np.stack([r.label[0].numpy().astype(np.uint8) for r in ready]) if masked else None
    vols = [residual(images[k, 0].numpy(), labels[k] if masked else None) for k in range(len(ready))]
    classes = [str(next(iter(s.classes.values()), "")) if s.classes else "" for s in studies]
    return Volumes([str(s.study_id) for s in studies], vols, images, labels, classes)


def load_inputs(synth: str | Path, train: str | Path, holdout: str | Path | None, split: str | Path | None,
                modality: str | None, show_progress: bool) -> AuditInputs:
    """The synthetic, training and holdout studies of a run-less audit, on one audit grid."""
    if holdout is not None and split is not None:
        raise MedsynthError("give either --holdout DATA or --split CSV, not both.")
    if holdout is not None:
        trained = read_studies(train, modality, show_progress, "training studies")
        held = read_studies(holdout, modality, show_progress, "held-out studies")
    else:
        trained, held = split_studies(train, split, modality, show_progress)
    synthetic = read_studies(synth, modality, show_progress, "synthetic studies")
    found = check_alike({"training": trained, "holdout": held, "synthetic": synthetic})
    spec = audit_grid(trained)
    masked = all(s.label is not None for s in (*trained, *held, *synthetic))
    return AuditInputs(on_grid(trained, spec, masked), on_grid(held, spec, masked), on_grid(synthetic, spec, masked),
                       masked, spec, found)
