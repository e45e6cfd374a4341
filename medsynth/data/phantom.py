"""Built-in default data: procedural abdominal phantoms (body, fat, liver, kidneys, spine, optional liver lesion).

Each case varies smoothly: organ sizes and positions jitter, a low-frequency deformation field bends every
structure, covariates shape the anatomy (men are larger; subcutaneous fat thickens with age). Intensities are
realistic for the modality: Hounsfield units for CT (air -1000, fat -100, liver 60, bone 700, a hypodense lesion),
T2-like arbitrary units for MR with a smooth bias field and Rician noise. Case k depends only on (seed, k).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from medsynth import provenance
from medsynth.data.study import Study
from medsynth.data.writers import write_msd_dataset
from medsynth.errors import MedsynthError
from medsynth.outputs import atomic_output_dir
from medsynth.progress import progress_iter

LABEL_NAMES = {0: "background", 1: "body", 2: "liver", 3: "kidney", 4: "bone", 5: "lesion"}
CLASS_COLUMN, RARE_CLASS, COMMON_CLASS = "pathology", "lesion", "normal"

# Mean intensity of each tissue: HU for CT, arbitrary T2-like units for MR.
_TISSUE = {
    "CT": {"air": -1000.0, "fat": -100.0, "body": 40.0, "liver": 60.0, "kidney": 30.0, "bone": 700.0, "lesion": 5.0},
    "MR": {"air": 0.0, "fat": 900.0, "body": 350.0, "liver": 250.0, "kidney": 600.0, "bone": 80.0, "lesion": 1000.0},
}


@dataclass(frozen=True)
class PhantomSpec:
    """What `medsynth phantom` makes: `cases` phantoms on a `size`^dims grid spanning `fov_mm` per side."""

    dims: int = 3
    size: int = 32
    modality: str = "CT"
    cases: int = 40
    prevalence: float = 0.2   # share of cases with a liver lesion (the rare class)
    seed: int = 0
    fov_mm: float = 320.0
    lesion_radius: tuple[float, float] = (0.06, 0.1)   # range of the lesion's radius, in units of half the field of view

    def __post_init__(self) -> None:
        if self.dims not in (2, 3):
            raise MedsynthError(f"--dims must be 2 or 3, got {self.dims}.")
        if not 8 <= self.size <= 512:
            raise MedsynthError(f"--size must be between 8 and 512 voxels, got {self.size}.")
        if self.modality not in _TISSUE:
            raise MedsynthError(f"--modality must be CT or MR, got {self.modality!r}.")
        if self.cases < 1:
            raise MedsynthError(f"--cases must be a positive integer, got {self.cases}.")
        if not 0.0 < self.lesion_radius[0] <= self.lesion_radius[1] < 0.5:
            raise MedsynthError(f"lesion_radius must be two radii in (0, 0.5), smallest first, got {self.lesion_radius}.")
        if not 0.0 <= self.prevalence <= 1.0:
            raise MedsynthError(f"--prevalence must be between 0 and 1, got {self.prevalence}.")

    @property
    def spacing_mm(self) -> float:
        return self.fov_mm / self.size


def _grid(spec: PhantomSpec) -> list[np.ndarray]:
    """Normalised RAS coordinates in [-1, 1] along each array axis (z = 0 for 2D)."""
    axis = np.linspace(-1.0, 1.0, spec.size)
    coords = np.meshgrid(*([axis] * spec.dims), indexing="ij")
    return list(coords) if spec.dims == 3 else [*coords, np.zeros_like(coords[0])]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 5) -> np.ndarray:
    """Zero-mean, unit-scale, low-frequency random field: coarse noise upsampled with cubic splines."""
    noise = rng.standard_normal((coarse,) * len(shape))
    return ndimage.zoom(noise, [s / coarse for s in shape], order=3, mode="nearest")[tuple(slice(0, s) for s in shape)]


def _ellipsoid(x, y, z, center, radii) -> np.ndarray:
    return ((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 + ((z - center[2]) / radii[2]) ** 2 <= 1.0


def phantom_anatomy(spec: PhantomSpec, rng: np.random.Generator, lesion: bool, sex: str, age: int) -> np.ndarray:
    """Label map (*spatial) of one phantom, ids as in LABEL_NAMES."""
    x, y, z = _grid(spec)
    shape = x.shape
    x = x + 0.04 * _smooth_field(rng, shape)  # smooth, subject-specific bending of all anatomy
    y = y + 0.04 * _smooth_field(rng, shape)
    if spec.dims == 3:
        z = z + 0.04 * _smooth_field(rng, shape)
    j = lambda scale=0.08: 1.0 + scale * rng.uniform(-1, 1)  # noqa: E731  multiplicative jitter
    size = 1.05 if sex == "M" else 0.97
    taper = 1.0 - 0.12 * z**2
    body_a, body_b = 0.82 * size * j(0.05) * taper, 0.58 * size * j(0.05) * taper
    body = (x / body_a) ** 2 + (y / body_b) ** 2 <= 1.0
    if spec.dims == 3:
        body &= np.abs(z) <= 0.92
    fat = 0.05 + 0.06 * (age - 25) / 60 * j(0.3)  # subcutaneous fat thickens with age
    inner = (x / (body_a - fat)) ** 2 + (y / (body_b - fat)) ** 2 <= 1.0
    labels = np.zeros(shape, np.uint8)
    labels[body] = 1
    liver_c = (-0.33 * j(), 0.08 * j(), 0.15 * j())
    liver_r = (0.33 * size * j(), 0.3 * size * j(), 0.45 * j())
    liver = _ellipsoid(x, y, z, liver_c, liver_r) & inner
    labels[liver] = 2
    for side in (-1.0, 1.0):
        kidney = _ellipsoid(x, y, z, (side * 0.36 * j(), -0.28 * j(), -0.05 * j()), (0.11 * j(), 0.08 * j(), 0.2 * j()))
        labels[kidney & inner & ~liver] = 3
    vertebra = (x / 0.11) ** 2 + ((y + 0.36 * j(0.03)) / 0.1) ** 2 <= 1.0
    discs = np.cos(z * 16.0 * j(0.05)) > -0.55  # vertebral bodies with thin discs between them
    labels[vertebra & discs & body] = 4
    if lesion:
        offset = rng.uniform(-0.45, 0.45, 3) * np.array(liver_r)
        offset[2] = offset[2] if spec.dims == 3 else 0.0
        radius = rng.uniform(*spec.lesion_radius)
        center = np.array(liver_c) + offset
        if spec.dims == 2:
            center[2] = 0.0
        labels[_ellipsoid(x, y, z, center, (radius, radius * j(0.2), radius * j(0.2))) & liver] = 5
        if not np.any(labels == 5):  # a grid too coarse to hold it: mark the liver voxel nearest the center
            inside = labels == 2
            where = np.stack([x[inside], y[inside], z[inside]], axis=1)
            nearest = np.argwhere(inside)[np.argmin(((where - center) ** 2).sum(1))]
            labels[tuple(nearest)] = 5
    labels[(labels == 1) & ~inner] = 6  # temporary id for fat, turned back into body below
    return labels


def phantom_intensities(spec: PhantomSpec, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Image (*spatial) in physical units for the label map (fat marked as 6)."""
    tissue = _TISSUE[spec.modality]
    scale = 10.0 if spec.modality == "CT" else 30.0
    image = np.full(labels.shape, tissue["air"], np.float64)
    for label_id, name in [(1, "body"), (6, "fat"), (2, "liver"), (3, "kidney"), (4, "bone"), (5, "lesion")]:
        image[labels == label_id] = tissue[name] + scale * rng.uniform(-1, 1)
    texture = ndimage.gaussian_filter(rng.standard_normal(labels.shape), 1.0) * scale * 1.5
    image += np.where(labels > 0, texture, 0.0)
    image = ndimage.gaussian_filter(image, 0.6)  # partial-volume blur at tissue borders
    if spec.modality == "CT":
        image += rng.normal(0.0, 8.0, labels.shape)
        return np.clip(image, -1024, 3071)
    image *= 1.0 + 0.1 * _smooth_field(rng, labels.shape, coarse=3)  # coil bias field
    sigma = 15.0
    return np.hypot(image + rng.normal(0, sigma, labels.shape), rng.normal(0, sigma, labels.shape))  # Rician


def make_phantom(spec: PhantomSpec, index: int, lesion: bool) -> Study:
    """Phantom number `index` of the set made with `spec` (depends only on spec.seed and index)."""
    rng = np.random.default_rng([spec.seed, index])
    sex = "M" if rng.random() < 0.5 else "F"
    age = int(rng.integers(25, 86))
    labels = phantom_anatomy(spec, rng, lesion, sex, age)
    image = phantom_intensities(spec, rng, labels)
    labels[labels == 6] = 1
    half = (spec.size - 1) / 2.0 * spec.spacing_mm
    affine = np.diag([spec.spacing_mm] * 3 + [1.0])
    affine[: spec.dims, 3] = -half  # centred on the world origin
    study_id = f"phantom_{index + 1:03d}"
    classes = {CLASS_COLUMN: RARE_CLASS if lesion else COMMON_CLASS, "age": age, "sex": sex}
    return Study(image[None].astype(np.float32), affine, spec.modality, labels, classes, study_id, study_id, "phantom")


def lesion_cases(spec: PhantomSpec) -> set[int]:
    """Indices of the cases that carry a lesion: round(prevalence * cases) of them, chosen by the seed."""
    n = int(round(spec.prevalence * spec.cases))
    if spec.prevalence > 0 and spec.cases >= 2:
        n = max(n, 1)
    return set(np.random.default_rng(spec.seed).permutation(spec.cases)[:n].tolist())


def write_phantom_dataset(out: str | Path, spec: PhantomSpec, overwrite: bool = False, show_progress: bool = True) -> Path:
    """Write the phantom set as an MSD dataset (imagesTr, labelsTr, dataset.json) plus labels.csv and medsynth.json."""
    lesions = lesion_cases(spec)
    rows: list[dict] = []

    def studies():
        for index in progress_iter(range(spec.cases), "making phantoms", enabled=show_progress):
            study = make_phantom(spec, index, index in lesions)
            rows.append({"case_id": study.study_id, **study.classes})
            yield study

    with atomic_output_dir(out, overwrite) as tmp:
        write_msd_dataset(tmp, studies(), name=f"medsynth phantom {spec.dims}D {spec.modality}", label_names=LABEL_NAMES,
                          modality_name=spec.modality,
                          description="Procedural abdominal phantoms made by medsynth; no real patient data.",
                          licence="CC0 (procedurally generated)")
        pd.DataFrame(rows).to_csv(tmp / "labels.csv", index=False)
        provenance.write_json(tmp / "medsynth.json", provenance.record(
            "phantom dataset", asdict(spec), seeds={"phantom": spec.seed},
            label_names={str(k): v for k, v in LABEL_NAMES.items()}, classes={CLASS_COLUMN: [COMMON_CLASS, RARE_CLASS]}))
    return Path(out).expanduser().resolve()
