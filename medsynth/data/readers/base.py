"""What every reader returns: lightweight study references (paths, ids) and the checks they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsynth.errors import DataError


@dataclass(frozen=True)
class StudyRef:
    """Where one study lives; cheap to make for thousands of studies, loaded into a Study on demand.

    Attributes:
        study_id: the dataset's case id (file stem, series folder, npz row).
        fmt: the name of the reader that loads it ('nifti', 'dataset', 'dicom', 'npz').
        images: image files, one per channel (DICOM: the folder holding the series; npz: the file).
        label: label-map file, '' when there is none.
        key: what picks the study inside `images` (DICOM: SeriesInstanceUID; npz: 'split:row').
        subject_id: the person; defaults to the study id.
        modality: 'CT', 'MR' or 'OT'.
        channels: how many channels the dataset says each image has (0: not stated).
    """

    study_id: str
    fmt: str
    images: tuple[str, ...]
    label: str = ""
    key: str = ""
    subject_id: str = ""
    modality: str = "OT"
    channels: int = 0


@dataclass
class Scan:
    """What a reader found under a path, before any pixel is read."""

    kind: str                                   # e.g. 'MSD dataset', 'DICOM folder'
    name: str                                   # dataset name
    refs: list[StudyRef]
    label_names: dict[int, str] | None = None   # label-map vocabulary, None when the format gives none
    classes: dict[str, dict] = field(default_factory=dict)  # study-level labels the format itself carries
    problems: list[str] = field(default_factory=list)       # non-fatal findings, shown in the ingest summary


def require_file(path: str | Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path} does not exist; check the path.")
    if not path.is_file():
        raise DataError(f"{what} {path} is not a file.")
    return path


def check_label_map(values: np.ndarray, where: str, allowed: dict[int, str] | None = None) -> np.ndarray:
    """Return the label map as integers, or raise if it holds non-integer, negative or unknown values."""
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise DataError(f"{where}: label map holds non-integer values; label maps must be integer class ids.")
    if values.size and values.min() < 0:
        raise DataError(f"{where}: label map holds negative values ({values.min()}); label ids start at 0.")
    labels = values.astype(np.int16 if values.size and values.max() > 255 else np.uint8)
    if allowed is not None:
        unknown = sorted(set(np.unique(labels).tolist()) - set(allowed))
        if unknown:
            raise DataError(
                f"{where}: label map holds values {unknown} that the dataset's label list {sorted(allowed)} "
                "does not name; fix the label map or add them to dataset.json 'labels'."
            )
    return labels


def check_same_grid(shape_a, affine_a, shape_b, affine_b, where: str, atol: float = 1e-3) -> None:
    """Raise unless two images share shape and affine (to `atol` mm)."""
    if tuple(shape_a) != tuple(shape_b):
        raise DataError(f"{where}: image shape {tuple(shape_a)} and label shape {tuple(shape_b)} differ; "
                        "the label map must be on the image's grid.")
    if not np.allclose(affine_a, affine_b, atol=atol):
        diff = float(np.abs(np.asarray(affine_a) - np.asarray(affine_b)).max())
        raise DataError(f"{where}: image and label affines differ by up to {diff:.4g} mm; "
                        "the label map must be on the image's grid (resample it, or fix its header).")
