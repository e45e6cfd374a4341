"""Preprocessing with MONAI transforms: RAS orientation, target spacing, crop/pad, intensity to [-1, 1] (invertible)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation, ResizeWithPadOrCrop, ScaleIntensityRange, Spacing

from medsynth.data.study import Study

_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass(frozen=True)
class PreprocessSpec:
    """How studies are brought onto a common grid and intensity scale.

    Attributes:
        spacing: target voxel size in mm per spatial axis; None keeps each study's own.
        shape: target grid (center crop / pad); None keeps the resampled size.
        ct_window: HU range mapped to [-1, 1] for CT (values outside are clipped).
        percentiles: per-volume, per-channel percentiles mapped to [-1, 1] for MR and other modalities.
    """

    spacing: tuple[float, ...] | None = None
    shape: tuple[int, ...] | None = None
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    percentiles: tuple[float, float] = (0.5, 99.5)

    @classmethod
    def from_config(cls, data) -> "PreprocessSpec":
        """The spec a training config's data section describes (config.DataConfig: spacing, shape, window, percentiles)."""
        return cls(data.spacing, data.shape, data.ct_window, data.percentiles)


@dataclass(frozen=True)
class IntensityMap:
    """Per-channel linear map between physical units and the model's [-1, 1]: u = 2 (x - lo) / (hi - lo) - 1."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    def _broadcast(self, values, ndim: int):
        shape = (-1,) + (1,) * (ndim - 1)
        return np.asarray(values, dtype=np.float64).reshape(shape)

    def to_unit(self, image: np.ndarray) -> np.ndarray:
        """(C, *spatial) physical values to [-1, 1] (clipped)."""
        lo, hi = self._broadcast(self.lo, image.ndim), self._broadcast(self.hi, image.ndim)
        return np.clip(2.0 * (image - lo) / (hi - lo) - 1.0, -1.0, 1.0).astype(np.float32)

    def to_physical(self, unit: np.ndarray) -> np.ndarray:
        """(C, *spatial) model values in [-1, 1] back to physical units (HU for CT)."""
        lo, hi = self._broadcast(self.lo, unit.ndim), self._broadcast(self.hi, unit.ndim)
        return ((np.asarray(unit, np.float64) + 1.0) / 2.0 * (hi - lo) + lo).astype(np.float32)


@dataclass
class Preprocessed:
    """A study on the model grid: image (C, *spatial) in [-1, 1], label (1, *spatial) or None, RAS affine."""

    image: torch.Tensor
    label: torch.Tensor | None
    affine: np.ndarray
    intensity: IntensityMap


def intensity_map(study: Study, spec: PreprocessSpec) -> IntensityMap:
    """The window for CT, or per-channel percentiles of this volume for MR and other modalities."""
    if study.modality == "CT":
        lo, hi = spec.ct_window
        return IntensityMap((float(lo),) * study.channels, (float(hi),) * study.channels)
    flat = study.image.reshape(study.channels, -1)
    lo, hi = np.percentile(flat, spec.percentiles, axis=1)
    hi = np.where(hi > lo, hi, lo + 1.0)  # a constant channel still maps to a valid range
    return IntensityMap(tuple(float(v) for v in lo), tuple(float(v) for v in hi))


def preprocess(study: Study, spec: PreprocessSpec) -> Preprocessed:
    """Orientation to RAS, resampling (labels nearest-neighbour), intensity to [-1, 1], crop/pad to spec.shape."""
    dims = study.spatial_dims
    affine = torch.as_tensor(study.affine)
    orient = Orientation(axcodes="RAS"[:dims], labels=_AXIS_LABELS)
    image = orient(MetaTensor(torch.from_numpy(study.image), affine=affine))
    label = orient(MetaTensor(torch.from_numpy(study.label[None].astype(np.int64)), affine=affine)) if study.label is not None else None
    if spec.spacing is not None:
        image = Spacing(pixdim=spec.spacing, mode="bilinear")(image)
        label = Spacing(pixdim=spec.spacing, mode="nearest")(label) if label is not None else None
    mapping = intensity_map(study, spec)
    image = torch.cat([
        ScaleIntensityRange(a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True)(image[c : c + 1])
        for c, (lo, hi) in enumerate(zip(mapping.lo, mapping.hi))
    ])
    if spec.shape is not None:
        image = ResizeWithPadOrCrop(spec.shape, value=-1.0)(image)
        label = ResizeWithPadOrCrop(spec.shape, value=0)(label) if label is not None else None
    out_affine = np.asarray(image.affine, dtype=np.float64)
    plain = lambda t: t.as_tensor() if isinstance(t, MetaTensor) else t  # noqa: E731
    return Preprocessed(plain(image).float(), plain(label).round().long() if label is not None else None, out_affine, mapping)
