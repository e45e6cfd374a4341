"""What an edit writes: each edited study on its own grid in its own dtype, its label map with the lesion, its
record (the source's content hash, never its identifiers or path), samples.csv, overview.png and the set record.

An edited set holds real patient anatomy: every file says `edited-real`, none says synthetic or de-identified.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from medsynth import provenance
from medsynth.data.writers import label_array_for_nifti, write_nifti
from medsynth.runs import SetFolder
from medsynth.synthesis.patch import Frame
from medsynth.viz import save_edit_grid

KIND = "edited-real"
DESCRIP = "medsynth EDITED REAL anatomy; not de-identified"
GOVERNANCE = ("Edited real studies: each holds a real patient's anatomy with a synthetic lesion painted in. They are "
              "not synthetic and not de-identified; use them only under the source data's own governance.")
PREVIEWS = 8


def cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Values in the stored dtype: rounded and clipped for integer types."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def nifti_order(image: np.ndarray) -> np.ndarray:
    return image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)


def preview(before: np.ndarray, after: np.ndarray, lesion: np.ndarray, index: np.ndarray, title: str):
    """The slice through the lesion's centre (last axis in 3D), cropped around the edit region."""
    centre = np.round(np.argwhere(lesion).mean(0)).astype(int)
    lo, hi = index.min(1), index.max(1) + 1
    pad = np.maximum(hi - lo, 16)
    box = [slice(max(int(a - p), 0), int(b + p)) for a, b, p in zip(lo, hi, pad)]
    if lesion.ndim == 3:
        box[2] = int(centre[2])
    box = tuple(box)
    return before[0][box].astype(np.float32), after[0][box].astype(np.float32), lesion[box], title


class EditWriter:
    """Writes the edits of one call into `folder` and keeps what samples.csv and the set record need."""

    def __init__(self, folder: Path, loaded, s, target) -> None:
        self.folder, self.files, self.loaded, self.s, self.t = folder, SetFolder(folder), loaded, s, target
        self.rows: list[dict] = []
        self.previews: list[tuple] = []
        self.sources: list[str] = []
        self.changed_outside = 0

    @property
    def count(self) -> int:
        return len(self.rows)

    def write(self, study, base: np.ndarray, intensity, job, unit: np.ndarray) -> None:
        """One edit: the model's patch back onto the study inside the edit region only, then its files. `base` holds
        the study's voxels as stored (C, *spatial), in the dtype the edit is written in."""
        painted = job.grid.give(intensity.to_physical(unit), job.index)        # (C, M)
        where = (slice(None), *job.index)
        real = base[where].astype(np.float64)
        image = base.copy()
        image[where] = cast(real + job.weight[None] * (painted - real), base.dtype)
        region = np.zeros(study.spatial_shape, bool)
        region[tuple(job.index)] = True
        changed = np.any(image != base, axis=0)
        outside = int((changed & ~region).sum())
        self.changed_outside += outside
        labels = np.zeros(study.spatial_shape, np.uint8) if study.label is None else study.label.copy()
        labels = label_array_for_nifti(np.maximum(labels, 0))
        labels[job.placement.lesion] = self.t.lesion
        study_id = f"edit_{job.number:05d}"
        source = provenance.sha256_bytes(np.ascontiguousarray(base).tobytes())
        write_nifti(self.folder / self.files.image_name(study_id), nifti_order(image), study.affine, descrip=DESCRIP)
        write_nifti(self.folder / self.files.label_name(study_id), labels, study.affine, label=True, descrip=DESCRIP)
        record = self.record(study, job, study_id, source, image, base, outside)
        self.files.study_record(study_id).write_text(json.dumps(record, indent=2, default=str) + "\n")
        self.sources.append(source)
        self.rows.append({"study_id": study_id, "index": job.number, "class": self.t.class_name or "",
                          "seed": self.s.seed, "image": self.files.image_name(study_id),
                          "label": self.files.label_name(study_id), "kind": KIND, "source_sha256": source,
                          "host": job.placement.host, "lesion_voxels": int(job.placement.lesion.sum()),
                          "qc_attempts": 1, "qc_passed": record["qc"]["passed"]})
        if len(self.previews) < PREVIEWS:
            self.previews.append(preview(base, image, job.placement.lesion, job.index, study_id))

    def record(self, study, job, study_id: str, source: str, image, base, outside: int) -> dict:
        lesion = job.placement.lesion
        centre = Frame(study.affine, study.spatial_dims).to_phys(np.argwhere(lesion).mean(0)[:, None])[:, 0]
        spacing = np.asarray(study.spacing)
        qc = {"changed_outside_edit_region": outside,
              "lesion_mean": round(float(image[0][lesion].astype(float).mean()), 3),
              "real_mean_there": round(float(base[0][lesion].astype(float).mean()), 3),
              "passed": outside == 0}
        return {"study_id": study_id, "kind": KIND, "holds_real_anatomy": True, "deidentified": False,
                "note": GOVERNANCE, "source_sha256": source, "index": job.number, "seed": self.s.seed,
                "run": str(self.loaded.path), "run_hash": self.loaded.run_hash,
                "catalog_fingerprint": self.loaded.meta["catalog_fingerprint"], "class": self.t.class_name,
                "lesion_label": {"id": self.t.lesion, "name": self.t.names[self.t.lesion]},
                "placement": {"centre_mm": [round(float(v), 2) for v in centre], "voxels": int(lesion.sum()),
                              "volume_mm3": round(float(lesion.sum() * np.prod(spacing)), 2),
                              "host": job.placement.host, "source": job.placement.source},
                "edit_region": {"margin_mm": self.t.margin_mm, "voxels": int(job.index.shape[1])},
                "patch": {"shape": list(job.grid.shape), "spacing_mm": list(job.grid.spacing),
                          "centre_mm": [round(float(v), 2) for v in job.grid.centre]},
                "sampler": f"{self.loaded.process.sampler} + RePaint", "steps": self.s.steps,
                "guidance": self.s.guidance, "resample": self.s.resample, "qc": qc, "modality": study.modality,
                "shape": list(study.spatial_shape), "spacing_mm": list(study.spacing), "dtype": str(base.dtype),
                "versions": provenance.versions()}

    def finish(self, skipped: list[tuple[str, str]]) -> None:
        """samples.csv, overview.png and the set record, after every edit."""
        pd.DataFrame(self.rows, columns=["study_id", "index", "class", "seed", "image", "label", "kind",
                                         "source_sha256", "host", "lesion_voxels", "qc_attempts", "qc_passed"]
                     ).to_csv(self.files.table, index=False)
        if self.previews:
            save_edit_grid(self.files.overview, self.previews)
        loaded, s = self.loaded, self.s
        provenance.write_json(self.files.record, provenance.record(
            "edited-real set", {**dataclasses.asdict(s), "margin_mm": self.t.margin_mm, "class": self.t.class_name,
                                "lesion_label": self.t.lesion, "inside": self.t.host},
            {"run": str(loaded.path), "run_hash": loaded.run_hash,
             "catalog_fingerprint": loaded.meta["catalog_fingerprint"],
             "sources_sha256": provenance.sha256_bytes("\n".join(self.sources).encode())},
            timestamp=False, seeds={"edit": s.seed, "generate": s.seed}, set_kind=KIND, holds_real_anatomy=True,
            deidentified=False, note=GOVERNANCE, training_config=loaded.meta["config"],
            modality=loaded.meta["modality"], class_names=loaded.class_names,
            label_names=loaded.meta.get("label_names", {}), num_labels=loaded.num_labels,
            skipped=[{"reason": why} for _, why in skipped],
            **({"label_ids": loaded.meta["label_ids"]} if loaded.meta.get("label_ids") else {})))
