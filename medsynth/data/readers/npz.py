"""MedMNIST-style .npz files: `<split>_images` (N, H, W[, 3]) or (N, D, H, W) and `<split>_labels` (N[, K]).

Each row becomes a study `<split>_<row>`; its label becomes the study-level column `class` (`class_k` when
multi-label), and the file's own split is kept as `source_split`.
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np

from medsynth.data.readers.base import Scan, StudyRef, require_file
from medsynth.data.study import Study
from medsynth.errors import DataError

SPLITS = ("train", "val", "test")


def is_npz(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".npz"


@functools.lru_cache(maxsize=4)
def _arrays(path: str) -> dict[str, np.ndarray]:
    require_file(path, "npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise DataError(f"{path} is not a readable .npz file ({err}); re-save it with numpy.savez.") from None


def _is_rgb(images: np.ndarray) -> bool:
    return images.ndim == 4 and images.shape[-1] == 3


def scan_npz(path: Path) -> Scan:
    arrays = _arrays(str(path))
    splits = [s for s in SPLITS if f"{s}_images" in arrays]
    if not splits:
        raise DataError(f"{path} has no '<split>_images' arrays (found {sorted(arrays)}); "
                        "MedMNIST files hold train_images/train_labels, val_*, test_*.")
    refs, classes = [], {}
    for split in splits:
        images, labels = arrays[f"{split}_images"], arrays.get(f"{split}_labels")
        if images.ndim not in (3, 4):
            raise DataError(f"{path}: {split}_images has shape {images.shape}; expected (N, H, W), (N, H, W, 3) or (N, D, H, W).")
        if labels is not None:
            labels = labels.reshape(len(labels), -1)
            if len(labels) != len(images):
                raise DataError(f"{path}: {split}_labels has {len(labels)} rows but {split}_images has {len(images)}.")
        for row in range(len(images)):
            study_id = f"{split}_{row:05d}"
            refs.append(StudyRef(study_id, "npz", (str(path.resolve()),), key=f"{split}:{row}"))
            if labels is not None:
                values = labels[row].tolist()
                classes[study_id] = {"class": values[0]} if len(values) == 1 else {f"class_{k}": v for k, v in enumerate(values)}
            classes.setdefault(study_id, {})["source_split"] = split
    return Scan("MedMNIST npz", path.stem, refs, classes=classes)


def load_npz(ref: StudyRef, label_names: dict[int, str] | None) -> Study:
    split, row = ref.key.split(":")
    images = _arrays(ref.images[0])[f"{split}_images"]
    image = np.asarray(images[int(row)], dtype=np.float32)
    image = np.moveaxis(image, -1, 0) if _is_rgb(images) else image[None]
    affine = picture_affine(image.shape[1]) if image.ndim == 3 else np.eye(4)
    return Study(image, affine, ref.modality, study_id=ref.study_id, subject_id=ref.subject_id, source=ref.images[0])


def picture_affine(rows: int) -> np.ndarray:
    """Where an (H, W) picture's pixels lie so that viewers show it as the file does: columns run left to right (+x),
    row 0 at the top (rows run down, -y); unit spacing. RAS viewers and medsynth's own pictures then show row 0 at the
    top, as the source shows it (an identity affine would turn it by 90 degrees)."""
    affine = np.eye(4)
    affine[:2, :2] = [[0.0, 1.0], [-1.0, 0.0]]
    affine[1, 3] = rows - 1.0
    return affine
