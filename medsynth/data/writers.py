"""NIfTI and MSD-layout writers: the same code writes the built-in phantoms and users' exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import nibabel as nib
import numpy as np

from medsynth.data.study import Study


def image_array_for_nifti(image: np.ndarray, modality: str) -> np.ndarray:
    """(C, *spatial) to NIfTI order (*spatial[, C]); CT as int16 HU, everything else float32."""
    data = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
    if modality == "CT":
        return np.clip(np.round(data), -32768, 32767).astype(np.int16)
    return data.astype(np.float32)


def label_array_for_nifti(label: np.ndarray) -> np.ndarray:
    return label.astype(np.uint8 if label.max(initial=0) <= 255 else np.int16)


def write_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray, label: bool = False, descrip: str = "") -> Path:
    """Write `data` with qform and sform (code 1, scanner) equal to `affine`, units mm; label maps get intent 'label'."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm", t="sec")
    if label:
        image.header.set_intent("label")
    if descrip:
        image.header["descrip"] = descrip[:79].encode("ascii", "replace")
    nib.save(image, str(path))
    return Path(path)


def write_study_nifti(study: Study, image_path: str | Path, label_path: str | Path | None = None, descrip: str = "") -> None:
    """Image in physical units (CT int16 HU, else float32) and, when given, its label map on the same grid."""
    write_nifti(image_path, image_array_for_nifti(study.image, study.modality), study.affine, descrip=descrip)
    if label_path is not None and study.label is not None:
        write_nifti(label_path, label_array_for_nifti(study.label), study.affine, label=True, descrip=descrip)


def write_msd_dataset(
    root: str | Path,
    studies: Iterable[Study],
    name: str,
    label_names: dict[int, str],
    modality_name: str,
    description: str = "",
    licence: str = "",
) -> list[str]:
    """Write `root/imagesTr`, `root/labelsTr` and a dataset.json readable as MSD and as nnU-Net v2.

    Returns the case ids written. `modality_name` is what dataset.json calls the channel ('CT', 'MRI').
    """
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    cases, dims = [], 3
    for study in studies:
        write_study_nifti(study, root / "imagesTr" / f"{study.study_id}.nii.gz", root / "labelsTr" / f"{study.study_id}.nii.gz")
        cases.append(study.study_id)
        dims = study.spatial_dims
    meta = {
        "name": name,
        "description": description,
        "licence": licence,
        "tensorImageSize": f"{dims}D",
        "modality": {"0": modality_name},
        "labels": {str(k): v for k, v in sorted(label_names.items())},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return cases
