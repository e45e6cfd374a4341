"""The Study: one image (C, *spatial) with the geometry, modality, label map and labels it came with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsynth.data.geometry import spacing_from_affine
from medsynth.errors import DataError

MODALITIES = ("CT", "MR", "OT")  # OT: any other modality (ultrasound, X-ray, unknown)

_MODALITY_ALIASES = {
    "CT": "CT", "CTA": "CT", "PET/CT": "CT",
    "MR": "MR", "MRI": "MR", "T1": "MR", "T1W": "MR", "T1GD": "MR", "T2": "MR", "T2W": "MR",
    "FLAIR": "MR", "ADC": "MR", "DWI": "MR", "PD": "MR",
}


def normalise_modality(name: str | None) -> str:
    """Map a modality as datasets spell it ('MRI', 'T2', 'ct', 'US') to 'CT', 'MR' or 'OT'."""
    if not name:
        return "OT"
    return _MODALITY_ALIASES.get(str(name).strip().upper(), "OT")


@dataclass
class Study:
    """One imaging study with its geometry.

    Attributes:
        image: (C, *spatial) float32 intensities in physical units (HU for CT).
        affine: (4, 4) map from voxel index (i, j, k, 1) to RAS world coordinates in mm. For 2D
            studies the third column is a unit placeholder normal.
        modality: 'CT', 'MR' or 'OT'.
        label: optional (*spatial) integer label map on the same grid as `image`.
        classes: study-level class labels and covariates, e.g. {'lesion': 1, 'age': 54, 'sex': 'F'}.
        study_id: the dataset's case id (e.g. the file stem).
        subject_id: the person the study belongs to; splits never separate a subject's studies.
        source: where it was read from.
    """

    image: np.ndarray
    affine: np.ndarray
    modality: str = "OT"
    label: np.ndarray | None = None
    classes: dict[str, Any] = field(default_factory=dict)
    study_id: str = ""
    subject_id: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        where = self.source or self.study_id or "study"
        if self.image.ndim not in (3, 4):
            raise DataError(f"{where}: image must be (C, *spatial) with 2 or 3 spatial axes, got shape {self.image.shape}.")
        if self.affine.shape != (4, 4) or not np.all(np.isfinite(self.affine)):
            raise DataError(f"{where}: the affine must be a finite 4x4 matrix.")
        if abs(np.linalg.det(self.affine[:3, :3])) < 1e-12:
            raise DataError(f"{where}: the affine is singular (zero spacing or collinear axes).")
        if self.modality not in MODALITIES:
            raise DataError(f"{where}: modality must be one of {MODALITIES}, got {self.modality!r}.")
        if self.label is not None:
            if self.label.shape != self.spatial_shape:
                raise DataError(
                    f"{where}: label map shape {self.label.shape} differs from image shape {self.spatial_shape}; "
                    "they must be on the same grid."
                )
            if not np.issubdtype(self.label.dtype, np.integer):
                raise DataError(f"{where}: label map must hold integers, got {self.label.dtype}.")
        self.subject_id = self.subject_id or self.study_id

    @property
    def spatial_dims(self) -> int:
        return self.image.ndim - 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])

    @property
    def channels(self) -> int:
        return self.image.shape[0]

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size along each spatial axis in mm."""
        return spacing_from_affine(self.affine, self.spatial_dims)
