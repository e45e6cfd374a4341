"""NIfTI files and folders of NIfTI files (image + optional `_label` / `_seg` / `_mask` partner)."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from medsynth.data.readers.base import Scan, StudyRef, check_label_map, check_same_grid, require_file
from medsynth.data.study import Study
from medsynth.errors import DataError, first_line

NIFTI_ENDINGS = (".nii.gz", ".nii")
_LABEL_SUFFIX = re.compile(r"_(label|labels|seg|mask)$", re.IGNORECASE)
_IMAGE_SUFFIX = re.compile(r"_image$", re.IGNORECASE)


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_ENDINGS)


def nifti_stem(path: str | Path) -> str:
    name = Path(path).name
    for ending in NIFTI_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return Path(path).stem


def read_nifti(path: str | Path, what: str = "NIfTI file") -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file as (array in file order, RAS affine), with one clear error for any failure."""
    path = require_file(path, what)
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except (nib.filebasedimages.ImageFileError, EOFError, zlib.error, OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable NIfTI file ({first_line(err, 160)}); re-export or replace it.") from None
    return np.asarray(data), np.asarray(image.affine, dtype=np.float64)


def image_to_channels_first(data: np.ndarray, where: str) -> np.ndarray:
    """(X, Y[, Z][, C]) NIfTI data to (C, *spatial); a single-slice (X, Y, 1) volume counts as 2D."""
    if data.ndim == 2:
        return data[None]
    if data.ndim == 3:
        return data[None, :, :, 0] if data.shape[2] == 1 else data[None]
    if data.ndim == 4:
        return np.moveaxis(data, -1, 0)
    if data.ndim == 5 and data.shape[3] == 1:  # (X, Y, Z, 1, C): NIfTI's vector intent
        return np.moveaxis(data[:, :, :, 0], -1, 0)
    raise DataError(f"{where}: cannot use an image of shape {data.shape}; expected 2D or 3D, optionally with channels.")


def label_to_spatial(data: np.ndarray, where: str) -> np.ndarray:
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise DataError(f"{where}: a label map must be 2D or 3D, got shape {data.shape}.")
    return data


def load_image_and_label(
    images: tuple[str, ...], label: str, where: str, label_names: dict[int, str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read channel files (or one multi-channel file) and an optional label map; check they share one grid."""
    channels, affine = [], None
    for path in images:
        data, aff = read_nifti(path, "image file")
        data = image_to_channels_first(data, str(path))
        if affine is not None:
            check_same_grid(channels[0].shape[1:], affine, data.shape[1:], aff, f"{path} (channel of {where})")
        affine = aff if affine is None else affine
        channels.append(data)
    image = np.concatenate(channels, axis=0).astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise DataError(f"{images[0]}: image holds NaN or infinite values; fix or drop this case.")
    label_map = None
    if label:
        data, aff = read_nifti(label, "label file")
        data = label_to_spatial(data, label)
        check_same_grid(image.shape[1:], affine, data.shape, aff, f"case {where}")
        label_map = check_label_map(data, str(label), label_names)
    return image, affine, label_map


def scan_nifti(path: Path) -> Scan:
    """A single NIfTI file, or a folder of them where `X_label.nii.gz` (or _seg, _mask) labels `X[_image].nii.gz`."""
    if path.is_file():
        return Scan("NIfTI file", nifti_stem(path), [StudyRef(nifti_stem(path), "nifti", (str(path),))])
    files = sorted(p for p in path.iterdir() if p.is_file() and is_nifti(p))
    images = {_IMAGE_SUFFIX.sub("", nifti_stem(p)): p for p in files if not _LABEL_SUFFIX.search(nifti_stem(p))}
    labels = {_LABEL_SUFFIX.sub("", nifti_stem(p)): p for p in files if _LABEL_SUFFIX.search(nifti_stem(p))}
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise DataError(f"{path}: label files without an image: {', '.join(orphans[:3])}; "
                        "name images <case>.nii.gz or <case>_image.nii.gz next to <case>_label.nii.gz.")
    refs = [StudyRef(case, "nifti", (str(images[case]),), str(labels.get(case, ""))) for case in sorted(images)]
    problems = []
    if labels and len(labels) < len(images):
        problems.append(f"{len(images) - len(labels)} of {len(images)} images have no label map")
    return Scan("NIfTI folder", path.name, refs, problems=problems)


def load_nifti(ref: StudyRef, label_names: dict[int, str] | None) -> Study:
    image, affine, label = load_image_and_label(ref.images, ref.label, ref.study_id, label_names)
    return Study(image, affine, ref.modality, label, study_id=ref.study_id, subject_id=ref.subject_id,
                 source=ref.images[0])


