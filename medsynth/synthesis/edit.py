"""`medsynth edit`: a synthetic lesion painted into real studies by a trained mask- or class-conditioned run.

For each study and edit: the lesion is placed (a user's mask, or a bank shape inside a host label); the edit region
is the lesion dilated by the margin (mm); a patch of the model's grid is cut around it in physical space (so studies
of any size or orientation work); the model inpaints the edit region with RePaint, conditioned on the study's labels
with the lesion added and on the lesion class; the result goes back onto the study's own grid inside the edit region
only, blended from the lesion (all model) to the region's edge (all real). Every other voxel is the input's own, in
its own dtype. An edited set holds real patient anatomy and says so in every file it writes.

A class-conditioned run without masks (e.g. a 2D classification set's) has no label map to place a lesion on: the
user's lesion masks (--lesions, value 1) say where, the model paints its lesion class in the edit region (the mask
and its margin), in the view it was trained in (the study centred on its grid) when the region fits that view. With no
label map the model places the lesion anywhere in the region, so the whole region is its (no blend) and the label
map written marks the region.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medsynth.config import EditConfig, with_keys
from medsynth.data.preprocess import PreprocessSpec, intensity_map
from medsynth.data.readers import load_study
from medsynth.diffusion import inpaint
from medsynth.errors import MedsynthError
from medsynth.outputs import atomic_output_dir, check_output_dir
from medsynth.progress import progress_iter
from medsynth.runs.loaded import LoadedRun, load_run
from medsynth.runtime import resolve_device, seeded_generator
from medsynth.synthesis.edit_inputs import candidates, in_run_ids, select, stored
from medsynth.synthesis.edit_outputs import EditWriter
from medsynth.synthesis.lesions import (LesionBank, Placement, default_lesion_label, place, resolve_label,
                                        user_lesion)
from medsynth.synthesis.patch import Frame, PatchGrid, distance_mm, patch_around


@dataclass
class EditResult:
    out: Path
    edited: int
    skipped: list[tuple[str, str]]   # (study id, why)
    changed_outside: int             # voxels changed outside every edit region (0 by construction; counted)
    seconds: float


@dataclass(frozen=True)
class Target:
    """What the run paints: its lesion label (dataset id), the class it conditions on, the host, the margin."""

    lesion: int
    lesion_index: int        # its id in the run's compact ids (the mask channel, the mask bank's value)
    class_name: str | None
    host: int | None
    names: dict[int, str]
    margin_mm: float


@dataclass
class Job:
    number: int
    study_number: int
    k: int
    placement: Placement
    index: np.ndarray        # (dims, M) study voxels of the edit region
    weight: np.ndarray       # (M,) share of the model's image at each of them
    grid: PatchGrid
    known: np.ndarray        # (C, *patch) the real patch in model units
    keep: np.ndarray         # (1, *patch) 1 where the real patch stays
    labels: np.ndarray       # (*patch) the run's ids, the lesion added


def target(loaded: LoadedRun, s: EditConfig) -> Target:
    """The run's lesion label, class and host, refused in one sentence when the run cannot edit."""
    if loaded.codec is not None:
        raise MedsynthError("edit works with runs whose model works on images directly; this is a latent run "
                            "(latent.enabled), so train an image-space mask-conditioned run to edit with.")
    if not loaded.num_labels:
        return class_target(loaded, s)
    ids = loaded.spec.dataset_ids
    names = {i: loaded.meta.get("label_names", {}).get(str(i), f"label_{i}") for i in ids}
    lesion = resolve_label(s.lesion_label, names, "mask", "--lesion-label") if s.lesion_label else \
        default_lesion_label(names)
    if lesion is None or lesion == 0:
        raise MedsynthError("the run's labels have none named lesion or tumour (its labels: " + ", ".join(
            f"{k} {v}" for k, v in names.items() if k) + "); name the lesion label with --lesion-label.")
    host = resolve_label(s.inside, names, "mask", "--inside") if s.inside else None
    if host == lesion or host == 0:
        raise MedsynthError(f"--inside {s.inside!r} must name a structure the lesion goes into, not the lesion or the "
                            "background.")
    spacing = float(max(loaded.meta["spacing"]))
    margin = 1.5 * spacing if s.margin_mm is None else float(s.margin_mm)
    return Target(lesion, list(ids).index(lesion), lesion_class(loaded, s, names[lesion]), host, names, margin)


def class_target(loaded: LoadedRun, s: EditConfig) -> Target:
    """A class-conditioned run without masks paints its lesion class where the user's lesion masks say (value 1)."""
    if not loaded.class_names:
        raise MedsynthError("this run is conditioned on neither masks nor classes, so it has no lesion to paint; train "
                            "one with conditioning.mask: true on label maps that hold a lesion label, or on a class "
                            "column.")
    if not s.lesions:
        raise MedsynthError("this run is not mask-conditioned (conditioning.mask: false), so it cannot place a lesion "
                            "on a label map; give each study's lesion mask with --lesions (<study_id>.nii.gz, lesion "
                            "voxels 1), or train with conditioning.mask: true.")
    for flag, value in (("--inside", s.inside), ("--size-mm", s.size_mm), ("--lesion-label", s.lesion_label)):
        if value:
            raise MedsynthError(f"{flag} places a lesion on the run's label maps, which a run without masks does not "
                                "have; drop it (the --lesions masks say where).")
    spacing = float(max(loaded.meta["spacing"]))
    margin = 1.5 * spacing if s.margin_mm is None else float(s.margin_mm)
    return Target(1, 1, lesion_class(loaded, s, "lesion"), None, {0: "background", 1: "lesion"}, margin)


def lesion_class(loaded: LoadedRun, s: EditConfig, lesion_name: str) -> str | None:
    classes = loaded.class_names
    if not classes:
        if s.lesion_class:
            raise MedsynthError(f"--class {s.lesion_class!r} was given but this run is not class-conditioned.")
        return None
    if s.lesion_class:
        loaded.spec.class_ids([s.lesion_class], "--class")
        return s.lesion_class
    named = [c for c in classes if c.lower() == lesion_name.lower()]
    if named:
        return named[0]
    counts = list(loaded.meta["class_counts"])
    if not counts:
        raise MedsynthError(f"this run keeps no class counts (a private run), so the lesion class cannot be taken as "
                            f"the rarest; name it with --class (one of {', '.join(classes)}).")
    return classes[int(np.argmin(counts))]     # the rarest class: the pathology people edit in


def edit_region(lesion: np.ndarray, spacing: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(dims, M) voxels within `margin` mm of the lesion, and each one's distance to it, on a window around it."""
    box = np.argwhere(lesion)
    pad = np.ceil(margin / spacing).astype(int) + 1
    lo, hi = np.maximum(box.min(0) - pad, 0), np.minimum(box.max(0) + pad + 1, lesion.shape)
    window = tuple(slice(a, b) for a, b in zip(lo, hi))
    distance = distance_mm(lesion[window], spacing)
    inside = distance <= margin
    return (np.argwhere(inside) + lo).T, distance[inside]


def blend_weight(distance: np.ndarray, margin: float) -> np.ndarray:
    """1 in the lesion, falling smoothly to 0 at the edit region's edge."""
    if margin <= 0:
        return np.ones_like(distance)
    x = np.clip(1.0 - distance / margin, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def patch_for(loaded: LoadedRun, frame: Frame, region: np.ndarray, index: np.ndarray) -> PatchGrid | None:
    """The model's patch for an edit region, None when the region does not fit. A run without masks learnt whole
    studies centred on its grid, so it paints in that view when the region fits there; else centred on the region."""
    shape, spacing = tuple(int(v) for v in loaded.meta["shape"]), tuple(float(v) for v in loaded.meta["spacing"])
    if not loaded.num_labels:   # the study's centre: its middle index, in any frame the midpoint of its corners
        middle = (np.asarray(region.shape, float)[:, None] - 1) / 2
        centred = PatchGrid(frame, shape, spacing, frame.to_phys(middle)[:, 0])
        if centred.fits(index):
            return centred
    grid = patch_around(frame, region, shape, spacing)
    return grid if grid.fits(index) else None


def plan_job(loaded: LoadedRun, study, intensity, placement: Placement, t: Target, number: int, study_number: int,
             k: int) -> Job | str:
    """The patch, known image, keep mask and conditioning label map of one edit (a reason when it cannot fit)."""
    frame = Frame(study.affine, study.spatial_dims)
    index, distance = edit_region(placement.lesion, frame.spacing, t.margin_mm)
    region = np.zeros(study.spatial_shape, bool)
    region[tuple(index)] = True
    grid = patch_for(loaded, frame, region, index)
    if grid is None:
        return "the lesion with its margin is larger than the model's field of view"
    known = intensity.to_unit(grid.take(study.image, order=1))
    edit = grid.take(region, order=1, cval=0.0) > 0
    keep = ~ndimage.binary_dilation(edit, iterations=1)   # a voxel's worth of slack around the region
    labels = np.zeros(grid.shape, np.int64)       # a run without masks: not used
    if loaded.num_labels and study.label is not None:
        labels = loaded.spec.compact(grid.take(study.label, order=0, cval=0).astype(np.int64)).astype(np.int64)
    lesion_patch = grid.take(placement.lesion, order=1, cval=0.0) >= 0.5
    if not lesion_patch.any():     # a lesion finer than the model's grid: its nearest model voxel
        lesion_patch[tuple(np.round(grid.phys_to_patch(frame.to_phys(index.mean(1, keepdims=True)))[:, 0])
                           .astype(int))] = True
    labels[lesion_patch] = t.lesion_index
    weight = blend_weight(distance, t.margin_mm)
    if not loaded.num_labels:   # a run without masks draws its lesion anywhere in the region: all of it is the model's
        placement, weight = dataclasses.replace(placement, lesion=region), np.ones_like(weight)
    return Job(number, study_number, k, placement, index, weight, grid, known, keep[None].astype(np.float32), labels)


def paint(loaded: LoadedRun, jobs: list[Job], t: Target, s: EditConfig, device) -> np.ndarray:
    """(B, C, *patch) inpainted patches in model units; job j draws from its own generator."""
    spec = loaded.spec
    classes = spec.class_ids([t.class_name] * len(jobs)) if spec.num_classes else None
    labels = torch.from_numpy(np.stack([j.labels for j in jobs]))
    generators = [seeded_generator(s.seed, j.study_number, j.k) for j in jobs]
    known = torch.from_numpy(np.stack([j.known for j in jobs]))
    keep = torch.from_numpy(np.stack([j.keep for j in jobs]))
    return inpaint(loaded.model, loaded.process, known, keep, generators, spec.conditions(classes, labels), s.steps,
                   s.guidance, s.resample, device).numpy()


def resolve(s: EditConfig, loaded: LoadedRun) -> EditConfig:
    diffusion = loaded.cfg.diffusion
    return dataclasses.replace(s, steps=s.steps or diffusion.sample_steps,
                               guidance=diffusion.guidance if s.guidance is None else s.guidance)


def edit(run: str | Path, data: str | Path, out: str | Path, config: EditConfig | None = None, *,
         device: str = "auto", modality: str | None = None, overwrite: bool = False, show_progress: bool = True,
         **keys) -> EditResult:
    """Paint a lesion into real studies of `data` with the run's model; write the edited set into `out`.

    `config` is the edit section (medsynth.config.EditConfig); keyword arguments override its keys (cases=, where=,
    per_study=, lesions=, inside=, size_mm=, margin_mm=, lesion_label=, lesion_class=, steps=, guidance=,
    resample=, seed=, batch_size=)."""
    start = time.monotonic()
    s = with_keys(config or EditConfig(), keys)
    check_output_dir(out, overwrite)
    dev = resolve_device(device)
    loaded = load_run(run, dev)
    s, t = resolve(s, loaded), target(loaded, s)
    lesions = Path(s.lesions).expanduser() if s.lesions else None
    if lesions is not None and not lesions.is_dir():
        raise MedsynthError(f"--lesions {lesions} is not a folder of lesion masks (<study_id>.nii.gz).")
    chosen = select(candidates(data, modality), s.cases, s.where)
    bank = None if lesions else LesionBank(loaded.folder, t.lesion_index, tuple(loaded.meta["spacing"]))
    skipped: list[tuple[str, str]] = []
    with atomic_output_dir(out, overwrite) as tmp:
        writer = EditWriter(tmp, loaded, s, t)
        for number, found in enumerate(progress_iter(chosen, "editing studies", enabled=show_progress)):
            study = load_study(found.ref, found.label_names)
            skipped += edit_study(loaded, study, found, number, s, t, bank, lesions, writer, dev)
        writer.finish(skipped)
    return EditResult(Path(out).expanduser().resolve(), writer.count, skipped, writer.changed_outside,
                      time.monotonic() - start)


def edit_study(loaded, study, found, number: int, s: EditConfig, t: Target, bank, lesions, writer, dev):
    """Every edit of one study, written; returns the edits skipped and why."""
    base = stored(found.ref, study)
    intensity = intensity_map(study, PreprocessSpec.from_config(loaded.cfg.data))
    if not loaded.num_labels:                              # a run without masks: the label map written marks
        study = dataclasses.replace(study, label=None)     # the edit region alone (1)
    own = study                                            # its label map in its own ids: what the output keeps
    study = in_run_ids(study, found.label_names, t.names, t.lesion)
    jobs, skipped = [], []
    for k in range(s.per_study):
        rng = np.random.default_rng([s.seed, number, k, 17])
        placement = user_lesion(lesions, study, t.lesion, tuple(t.names)) if lesions else \
            place(bank, study, t.host, t.names, t.lesion, s.size_mm, rng)
        job = plan_job(loaded, study, intensity, placement, t, number * s.per_study + k, number, k) \
            if isinstance(placement, Placement) else placement
        if isinstance(job, str):
            skipped.append((study.study_id, job))
        else:
            jobs.append(job)
    for i in range(0, len(jobs), s.batch_size):
        batch = jobs[i : i + s.batch_size]
        for job, unit in zip(batch, paint(loaded, batch, t, s, dev)):
            writer.write(own, base, intensity, job, unit)
    return skipped
