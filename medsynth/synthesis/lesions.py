"""Where an edit's lesion goes: a user's lesion mask on the study's own grid, or a shape from the run's mask bank
placed automatically (seeded rotation, scale and warp) where the whole lesion lies inside a host label.

The bank's shapes are the connected components of the lesion label in the training label maps, on the model grid
at the model's spacing; they are placed in physical space (mm), so a study of any spacing or orientation gets a
lesion of the same physical size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medsynth.data.readers.nifti import label_to_spatial, read_nifti
from medsynth.data.study import Study
from medsynth.errors import MedsynthError
from medsynth.runs import RunFolder
from medsynth.synthesis.masks import Augmentation
from medsynth.synthesis.patch import Frame

LESION_WORDS = ("lesion", "tumour", "tumor", "metastasis", "nodule", "cancer")
TRIES = 60   # random positions tried before a study is skipped as having no room


@dataclass(frozen=True)
class Placement:
    lesion: np.ndarray          # (*spatial) bool on the study's grid
    host: str                   # the host label's name ('' when placed without one)
    source: dict                # user file, or bank study + component + rotation / scale


def resolve_label(value: str, names: dict[int, str], what: str, flag: str) -> int:
    """A label given by name or id -> its dataset id, refused naming the labels the run knows."""
    by_name = {v.lower(): k for k, v in names.items()}
    key = str(value).strip().lower()
    if key in by_name:
        return by_name[key]
    if key.isdigit() and int(key) in names:
        return int(key)
    known = ", ".join(f"{k} {v}" for k, v in sorted(names.items()) if k)
    raise MedsynthError(f"{flag} {value!r} is not one of the run's {what} labels ({known}).")


def default_lesion_label(names: dict[int, str]) -> int | None:
    """The label whose name says lesion (lesion, tumour, tumor, metastasis, nodule, cancer)."""
    for k, v in sorted(names.items()):
        if k and any(word in v.lower() for word in LESION_WORDS):
            return k
    return None


def equivalent_diameter(voxels: int, spacing: np.ndarray) -> float:
    """The diameter (mm) of the sphere (3D) or disc (2D) of the same volume."""
    size = voxels * float(np.prod(spacing))
    return float((6 * size / np.pi) ** (1 / 3) if len(spacing) == 3 else (4 * size / np.pi) ** 0.5)


class LesionBank:
    """The lesion shapes of a run's training label maps (one per connected component)."""

    def __init__(self, run: RunFolder, lesion: int, spacing: tuple[float, ...]) -> None:
        labels, study_ids, _ = run.read_mask_bank()
        self.spacing = np.asarray(spacing, float)
        self.shapes: list[tuple[np.ndarray, str]] = []
        for study_id, volume in zip(study_ids, labels):
            parts, count = ndimage.label(volume == lesion)
            for box, k in zip(ndimage.find_objects(parts), range(1, count + 1)):
                self.shapes.append((parts[box] == k, str(study_id)))
        if not self.shapes:
            raise MedsynthError(f"the run's mask bank holds no lesion (label id {lesion}) to place; give lesion masks "
                                "with --lesions DIR instead.")

    def draw(self, rng: np.random.Generator, size_mm: tuple[float, float] | None) -> tuple[np.ndarray, float, dict]:
        """A warped shape (bool, model voxels), the factor that scales it to its drawn size, and what was drawn."""
        pick = int(rng.integers(len(self.shapes)))
        shape, study_id = self.shapes[pick]
        pad = int(np.ceil(max(shape.shape) * 0.5)) + 2
        planes = 3 if shape.ndim == 3 else 1
        warp = Augmentation((), tuple(float(v) for v in rng.uniform(-180, 180, planes)), 1.0, (0.0,) * shape.ndim,
                            2.0, float(rng.uniform(0.0, 1.0)))
        warped = warp.apply(np.pad(shape, pad).astype(np.uint8), rng).astype(bool)
        warped = warped if warped.any() else shape
        warped = warped[ndimage.find_objects(warped.astype(np.uint8))[0]]     # trimmed to the shape itself
        native = equivalent_diameter(int(warped.sum()), self.spacing)
        target = rng.uniform(*size_mm) if size_mm else native * rng.uniform(0.8, 1.2)
        return warped, float(target / native), {"kind": "mask bank", "study_id": study_id, "component": pick,
                                                 **warp.describe(), "diameter_mm": round(float(target), 2)}


def stamp(shape: np.ndarray, factor: float, spacing: np.ndarray, frame: Frame, study_shape: tuple[int, ...],
          centre: np.ndarray) -> np.ndarray | None:
    """The study voxels (dims, M) of the shape scaled by `factor` and centred on study voxel `centre` (None: it would
    cross the study's border)."""
    reach_mm = factor * float(np.linalg.norm(np.asarray(shape.shape) * spacing)) / 2.0
    reach = np.ceil(reach_mm / frame.spacing).astype(int) + 1
    lo, hi = centre - reach, centre + reach + 1
    if np.any(lo < 0) or np.any(hi > np.asarray(study_shape)):
        return None
    window = np.indices(tuple(hi - lo)).reshape(frame.dims, -1) + lo[:, None]
    offset = frame.to_phys(window.astype(float)) - frame.to_phys(centre[:, None].astype(float))
    coords = offset / (factor * spacing[:, None]) + (np.asarray(shape.shape)[:, None] - 1) / 2.0
    inside = ndimage.map_coordinates(shape.astype(np.uint8), coords, order=0, mode="constant", cval=0).astype(bool)
    return window[:, inside]


def place(bank: LesionBank, study: Study, host: int | None, names: dict[int, str], lesion_id: int,
          size_mm: tuple[float, float] | None, rng: np.random.Generator) -> Placement | str:
    """A lesion inside the host label of the study's own label map (or, without --inside, inside the structure at
    its centre), off every other structure; a reason in words when no position is found."""
    frame, labels = Frame(study.affine, study.spatial_dims), study.label
    if host is not None and (labels is None or not np.any(labels == host)):
        return f"it has no {names.get(host, host)} (label {host}) in its label map"
    if labels is None:
        candidates = np.argwhere(np.ones(study.spatial_shape, bool))
    else:
        candidates = np.argwhere(labels == host) if host is not None else np.argwhere((labels > 0) & (labels != lesion_id))
    if not len(candidates):
        return "its label map has no structure to place a lesion in"
    for _ in range(TRIES):
        shape, factor, source = bank.draw(rng, size_mm)
        centre = candidates[rng.integers(len(candidates))]
        voxels = stamp(shape, factor, bank.spacing, frame, study.spatial_shape, centre)
        if voxels is None or not voxels.shape[1]:
            continue
        where = labels[tuple(centre)] if labels is not None else None
        if where is None or np.all(labels[tuple(voxels)] == where):
            lesion = np.zeros(study.spatial_shape, bool)
            lesion[tuple(voxels)] = True
            return Placement(lesion, names.get(int(where), str(where)) if where is not None else "", source)
    inside = names.get(host, str(host)) if host is not None else "one structure"
    return f"no position was found where the whole lesion lies inside {inside} (tried {TRIES})"


def user_lesion(folder: Path, study: Study, lesion_id: int, allowed: tuple[int, ...]) -> Placement | str:
    """The user's lesion mask for this study (<study_id>.nii.gz in `folder`), on the study's own grid."""
    path = next((folder / f"{study.study_id}{ext}" for ext in (".nii.gz", ".nii")
                 if (folder / f"{study.study_id}{ext}").is_file()), None)
    if path is None:
        return f"--lesions holds no {study.study_id}.nii.gz"
    data, affine = read_nifti(path, "lesion mask")
    mask = label_to_spatial(data, str(path))
    if mask.shape != study.spatial_shape or not np.allclose(affine, study.affine, atol=1e-3):
        raise MedsynthError(f"lesion mask {path} is on another grid than study {study.study_id} (shape {mask.shape} "
                            f"vs {study.spatial_shape}, or another affine); give masks on each study's own grid.")
    unknown = sorted(set(np.unique(mask).astype(int).tolist()) - set(allowed))
    if unknown:
        raise MedsynthError(f"lesion mask {path} holds label ids {unknown} that the run does not know (its label ids: "
                            f"{', '.join(map(str, allowed))}).")
    if not np.any(mask == lesion_id):
        raise MedsynthError(f"lesion mask {path} holds no voxel of the lesion label (id {lesion_id}); mark the lesion "
                            f"with {lesion_id}.")
    return Placement(mask == lesion_id, "", {"kind": "user", "file": path.name})
