"""Masks to paint images onto: the run's bank of training label maps (seeded augmentation) or a user folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medsynth.conditioning import ConditionSpec
from medsynth.data.readers.nifti import is_nifti, label_to_spatial, read_nifti
from medsynth.data.readers.base import check_label_map
from medsynth.errors import MedsynthError
from medsynth.runs import RunFolder


@dataclass(frozen=True)
class MaskChoice:
    labels: np.ndarray            # (*spatial) uint8 on the model grid
    source: dict                  # where it came from: bank study id + augmentation, or the user's file
    affine: np.ndarray | None     # the user's file affine; None for bank masks (model grid at training spacing)


@dataclass(frozen=True)
class Augmentation:
    """Label-preserving augmentation parameters, drawn first, then applied deterministically."""

    flip_axes: tuple[int, ...]
    rotation_deg: tuple[float, ...]
    scale: float
    shift_vox: tuple[float, ...]
    elastic_sigma_vox: float
    elastic_alpha_vox: float

    @classmethod
    def draw(cls, rng: np.random.Generator, dims: int, flip: bool) -> "Augmentation":
        planes = 3 if dims == 3 else 1
        return cls(
            flip_axes=(0,) if flip and rng.random() < 0.5 else (),
            rotation_deg=tuple(float(v) for v in rng.uniform(-5, 5, planes)),
            scale=float(rng.uniform(0.95, 1.05)),
            shift_vox=tuple(float(v) for v in rng.uniform(-2, 2, dims)),
            elastic_sigma_vox=4.0,
            elastic_alpha_vox=float(rng.uniform(0.0, 1.5)),
        )

    def apply(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Nearest-neighbour resampling of the label map through flip, rotation, scale, shift and a smooth warp."""
        dims = labels.ndim
        out = np.flip(labels, self.flip_axes) if self.flip_axes else labels
        center = (np.array(out.shape) - 1) / 2.0
        rotation = _rotation(self.rotation_deg, dims)
        grid = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in out.shape], indexing="ij"))
        coords = np.tensordot(rotation / self.scale, grid.reshape(dims, -1) - center[:, None], axes=1) \
            + center[:, None] - np.array(self.shift_vox)[:, None]
        for axis in range(dims):  # smooth displacement field, label-preserving because sampling is nearest
            field = ndimage.gaussian_filter(rng.standard_normal(out.shape), self.elastic_sigma_vox)
            field /= max(np.abs(field).max(), 1e-8)
            coords[axis] += self.elastic_alpha_vox * field.ravel()
        warped = ndimage.map_coordinates(out, coords, order=0, mode="constant", cval=0)
        return warped.reshape(out.shape).astype(np.uint8)

    def describe(self) -> dict:
        return {"flip_axes": list(self.flip_axes), "rotation_deg": [round(v, 3) for v in self.rotation_deg],
                "scale": round(self.scale, 4), "shift_vox": [round(v, 3) for v in self.shift_vox],
                "elastic_alpha_vox": round(self.elastic_alpha_vox, 3)}


def _rotation(degrees: tuple[float, ...], dims: int) -> np.ndarray:
    angles = np.radians(degrees)
    if dims == 2:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    result = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        rot = np.eye(3)
        rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
        result = rot @ result
    return result


class MaskBank:
    """Training label maps on the model grid (the run's mask bank), drawn per class with seeded augmentation."""

    def __init__(self, run: RunFolder, augment: bool = True, flip: bool = False) -> None:
        self.labels, self.study_ids, self.classes = run.read_mask_bank()
        self.augment, self.flip = augment, flip

    def draw(self, rng: np.random.Generator, class_name: str | None) -> MaskChoice:
        pool = np.flatnonzero(self.classes == class_name) if class_name is not None else np.arange(len(self.labels))
        pool = pool if len(pool) else np.arange(len(self.labels))
        pick = int(pool[rng.integers(len(pool))])
        labels, source = self.labels[pick], {"kind": "mask bank", "study_id": str(self.study_ids[pick])}
        if self.augment:
            aug = Augmentation.draw(rng, labels.ndim, self.flip)
            labels = aug.apply(labels, rng)
            source["augmentation"] = aug.describe()
        return MaskChoice(labels, source, None)


def load_user_masks(folder: str | Path, shape: tuple[int, ...], spec: ConditionSpec) -> list[MaskChoice]:
    """Every label map in a NIfTI folder (the dataset's label ids), checked against the model's grid and label
    vocabulary; returned in the run's compact ids."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MedsynthError(f"--masks {folder} is not a folder of NIfTI label maps.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p))
    if not files:
        raise MedsynthError(f"--masks {folder} holds no NIfTI label maps (.nii or .nii.gz).")
    masks = []
    for path in files:
        data, affine = read_nifti(path, "mask file")
        data = label_to_spatial(data, str(path))
        labels = spec.compact(check_label_map(data, str(path), {k: str(k) for k in spec.dataset_ids}))
        if labels.shape != tuple(shape):
            raise MedsynthError(f"mask {path} has shape {labels.shape} but the model's grid is {tuple(shape)}; "
                                "resample the mask to the training grid.")
        masks.append(MaskChoice(labels.astype(np.uint8), {"kind": "user", "file": str(path)}, affine))
    return masks
