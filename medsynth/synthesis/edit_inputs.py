"""What `medsynth edit` reads: the real studies to edit (any reader, filtered by case ids or by their labels) and
how each one's voxels are stored, so that the edited file keeps the input's dtype and every untouched voxel."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medsynth.data.catalog import CORE_COLUMNS, is_catalog_folder, read_catalog_folder, ref_from_row
from medsynth.data.labels import read_labels_csv
from medsynth.data.readers import StudyRef, scan
from medsynth.data.readers.nifti import image_to_channels_first, is_nifti
from medsynth.data.study import Study
from medsynth.errors import MedsynthError

LABELS_NAME = "labels.csv"   # study-level labels beside a dataset (as ingest reads them)


@dataclass(frozen=True)
class Candidate:
    ref: StudyRef
    classes: dict               # the study's labels (for --where)
    label_names: dict[int, str] | None


def candidates(data: str | Path, modality: str | None) -> list[Candidate]:
    """Every study of `data`: an ingest folder by its catalog, anything else by the readers (+ labels.csv beside)."""
    path = Path(data).expanduser()
    if is_catalog_folder(path):
        catalog, names = read_catalog_folder(path)
        extra = [c for c in catalog.columns if c not in CORE_COLUMNS]
        return [Candidate(ref_from_row(row), {c: row[c] for c in extra if str(row[c]) not in ("", "nan")}, names)
                for _, row in catalog.iterrows()]
    found = scan(path, modality)
    classes = {k: dict(v) for k, v in found.classes.items()}
    labels = path / LABELS_NAME if path.is_dir() else path.parent / LABELS_NAME
    if labels.is_file():
        for study_id, values in read_labels_csv(labels, [r.study_id for r in found.refs]).items():
            classes.setdefault(study_id, {}).update(values)
    return [Candidate(ref, classes.get(ref.study_id, {}), found.label_names) for ref in found.refs]


def parse_where(items: tuple[str, ...]) -> dict[str, set[str]]:
    """COLUMN=VALUE filters (repeatable; several values of one column are alternatives)."""
    wanted: dict[str, set[str]] = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column.strip() or not value.strip():
            raise MedsynthError(f"--where {item!r} must be COLUMN=VALUE, e.g. --where pathology=normal.")
        wanted.setdefault(column.strip(), set()).add(value.strip())
    return wanted


def select(found: list[Candidate], cases: tuple[str, ...], where: tuple[str, ...]) -> list[Candidate]:
    """The studies named by `cases` (all when empty) whose labels match every `where` filter."""
    ids = [c.ref.study_id for c in found]
    unknown = sorted(set(cases) - set(ids))
    if unknown:
        raise MedsynthError(f"--case {unknown[0]!r} is not a study of the data (its studies are named like "
                            f"{ids[0]!r}).")
    chosen = [c for c in found if not cases or c.ref.study_id in cases]
    for column, values in parse_where(where).items():
        known = sorted({k for c in found for k in c.classes})
        if column not in known:
            raise MedsynthError(f"--where {column}=... names a column the studies do not have (their labels: "
                                f"{', '.join(known) or 'none; add a labels.csv beside the data'}).")
        chosen = [c for c in chosen if str(c.classes.get(column, "")) in values]
    if not chosen:
        raise MedsynthError("no study matches the --case / --where filters; check the values (medsynth ingest shows "
                            "each column's values).")
    return chosen


def stored(ref: StudyRef, study: Study) -> np.ndarray:
    """The study's voxels exactly as the input holds them (C, *spatial), already in the dtype to write: a NIfTI
    file's own array and dtype (float32 for scaled integers); otherwise int16 for integer-valued data in range
    (CT in HU from DICOM), else float32."""
    if len(ref.images) == 1 and Path(ref.images[0]).is_file() and is_nifti(Path(ref.images[0])):
        image = nib.load(ref.images[0])
        slope, inter = image.header.get_slope_inter()
        unscaled = slope is None or (float(slope) == 1.0 and float(inter or 0.0) == 0.0)
        data = image_to_channels_first(np.asanyarray(image.dataobj), ref.images[0])
        if data.shape == study.image.shape:
            return data if unscaled else data.astype(np.float32)
    values = study.image
    integral = np.all(values == np.round(values)) and values.min() >= -32768 and values.max() <= 32767
    return values.astype(np.int16) if integral else values


def in_run_ids(study: Study, names: dict[int, str] | None, run_names: dict[int, str], lesion: int) -> Study:
    """The study with its label map in the run's label ids, matched by name when the data names its labels (a DICOM
    SEG's 'Liver' is the run's 'liver' whatever their ids); labels the run does not know become background. Refused
    when the run's lesion id is already one of the study's own labels under another name."""
    if study.label is None or not names:
        return study
    by_name = {v.strip().lower(): k for k, v in run_names.items()}
    mapping = {int(k): by_name.get(str(v).strip().lower(), 0) for k, v in names.items()}
    clash = names.get(lesion)
    if clash is not None and mapping.get(lesion) != lesion and int(np.sum(study.label == lesion)):
        raise MedsynthError(f"study {study.study_id} already uses label id {lesion} for {clash!r}, which the run's "
                            f"lesion label would overwrite; relabel the study's label maps.")
    if all(k == v for k, v in mapping.items()):
        return study
    lookup = np.zeros(max(int(study.label.max()), max(mapping)) + 1, np.int64)
    for k, v in mapping.items():
        lookup[k] = v
    return dataclasses.replace(study, label=lookup[study.label].astype(np.uint8))
