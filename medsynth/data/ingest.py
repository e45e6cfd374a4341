"""Ingest: read every study of a dataset, validate it, and write the catalog with a seeded subject-level split."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medsynth import provenance
from medsynth.data.catalog import (INGEST_FILE, apply_split, build_catalog, catalog_fingerprint, categorical_columns, make_split,
                                   save_catalog_folder)
from medsynth.data.labels import read_labels_csv
from medsynth.data.readers import Scan, load_study, refuse_mixed, scan
from medsynth.data.study import Study
from medsynth.errors import DataError
from medsynth.outputs import atomic_output_dir
from medsynth.progress import progress_iter

DEFAULT_LABELS_NAME = "labels.csv"  # picked up from the dataset folder when --labels is not given


@dataclass
class IngestResult:
    """What `ingest` found and wrote."""

    catalog: pd.DataFrame
    kind: str
    name: str
    label_names: dict[int, str] | None
    fingerprint: str
    labels_csv: Path | None
    problems: list[str] = field(default_factory=list)
    out: Path | None = None


def study_stats(study: Study) -> dict:
    """The per-study catalog fields measured from the loaded pixels."""
    digest = hashlib.sha256(np.ascontiguousarray(study.image).tobytes())
    digest.update(np.round(study.affine, 6).tobytes())
    if study.label is not None:
        digest.update(np.ascontiguousarray(study.label).tobytes())
    return {
        "modality": study.modality,
        "channels": study.channels,
        "shape": "x".join(str(n) for n in study.spatial_shape),
        "spacing": "x".join(f"{s:g}" for s in study.spacing),
        "label_values": ",".join(str(v) for v in np.unique(study.label)) if study.label is not None else "",
        "sha256": digest.hexdigest(),
    }


def study_labels(found: Scan, ids: list[str], labels_path: Path | None, problems: list[str]) -> dict[str, dict]:
    """Each study's labels: what the files say, then the labels CSV's columns (a missing row is a problem noted)."""
    classes = {k: dict(v) for k, v in found.classes.items()}
    if labels_path is not None:
        from_csv = read_labels_csv(labels_path, ids)
        for study_id, values in from_csv.items():
            classes.setdefault(study_id, {}).update(values)
        if len(from_csv) < len(ids):
            problems.append(f"{len(ids) - len(from_csv)} studies have no row in {labels_path.name}")
    return classes


def name_classes(classes: dict[str, dict], spec: str) -> None:
    """Replace the ids of a class column by names in place: '0=malignant,1=benign' (the column `class`, or the only
    class column) or 'COLUMN:0=malignant,1=benign'."""
    column, _, pairs = spec.rpartition(":") if ":" in spec.split("=")[0] else ("", "", spec)
    names = {}
    for pair in filter(None, (p.strip() for p in pairs.split(","))):
        value, sep, name = pair.partition("=")
        if not sep or not value.strip() or not name.strip():
            raise DataError(f"--class-names {spec!r} must look like 0=malignant,1=benign (VALUE=NAME, comma-separated).")
        names[value.strip()] = name.strip()
    columns = sorted({c for values in classes.values() for c in values if c not in ("source_split", "subject_id")})
    column = column or ("class" if "class" in columns else columns[0] if len(columns) == 1 else "")
    if column not in columns:
        raise DataError(f"--class-names names the values of {column or 'a class column'!r}, which the data does not "
                        f"have (columns: {', '.join(columns) or 'none'}); write COLUMN:0=name,1=name.")
    unnamed = sorted({str(v[column]) for v in classes.values() if column in v} - set(names))
    if unnamed:
        raise DataError(f"--class-names gives no name for {column} value {unnamed[0]!r} (named: {', '.join(names)}); "
                        "name every value.")
    for values in classes.values():
        if column in values:
            values[column] = names[str(values[column])]


def pick_stratum(catalog: pd.DataFrame) -> str | None:
    """The first class-like study-level column with two or more values: the class the split keeps balanced."""
    return next((c for c in categorical_columns(catalog) if catalog[c].nunique() > 1), None)


def ingest(
    data: str | Path,
    out: str | Path | None = None,
    labels: str | Path | None = None,
    modality: str | None = None,
    holdout: float = 0.25,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
    class_names: str | None = None,
    split: str | Path | None = None,
) -> IngestResult:
    """Read and validate every study under `data`; with `out`, write catalog.csv, split.csv and ingest.json there.

    `class_names` ('0=malignant,1=benign', or 'COLUMN:0=...') names the values of a class column whose labels are
    ids (MedMNIST's `class` by default). `split` (a CSV of study_id, split) is honoured exactly instead of drawing
    one. Raises DataError with one sentence on the first study that cannot be used.
    """
    data = Path(data).expanduser().resolve()
    found: Scan = scan(data, modality)
    refuse_mixed(found, data)
    ids = [ref.study_id for ref in found.refs]
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise DataError(f"{data} holds two studies with the id {dup!r}; rename one so that case ids are unique.")
    labels_path = Path(labels) if labels else (data / DEFAULT_LABELS_NAME if (data / DEFAULT_LABELS_NAME).is_file() else None)
    problems = list(found.problems)
    classes = study_labels(found, ids, labels_path, problems)
    if class_names:
        name_classes(classes, class_names)

    catalog = build_catalog(found.refs, read_stats(found, problems, show_progress), classes)
    if catalog["channels"].nunique() > 1:
        raise DataError(f"{data}: studies have different channel counts {sorted(catalog['channels'].unique())}; "
                        "a dataset must have the same channels in every study.")
    if catalog["shape"].str.count("x").nunique() > 1:
        raise DataError(f"{data} mixes 2D and 3D studies; ingest them as separate datasets.")
    stratum = pick_stratum(catalog)
    if split is not None:
        catalog = apply_split(catalog, split)
    elif "source_split" in catalog.columns:  # MedMNIST: keep the official split; val and test are never trained on
        catalog["split"] = np.where(catalog["source_split"] == "train", "train", "holdout")
        problems.append("kept the file's own train/val/test split (val and test are the holdout); --holdout is not used")
    else:
        catalog["split"] = make_split(catalog["subject_id"], holdout, seed, catalog[stratum] if stratum else None)
    result = IngestResult(catalog, found.kind, found.name, found.label_names, catalog_fingerprint(catalog),
                          labels_path, problems)
    if out is not None:
        result.out = _write(result, out, overwrite, data, dict(holdout=holdout, seed=seed, modality=modality, stratify=stratum,
                                                               class_names=class_names,
                                                               split=str(split) if split else None))
    return result


def read_stats(found: Scan, problems: list[str], show_progress: bool) -> dict[str, dict]:
    """Every study read once: its catalog statistics by study id; blank images and empty label maps noted."""
    stats, empty_labels, constant = {}, 0, []
    for ref in progress_iter(found.refs, "reading studies", enabled=show_progress):
        study = load_study(ref, found.label_names)
        stats[ref.study_id] = study_stats(study)
        empty_labels += study.label is not None and not np.any(study.label)
        constant += [ref.study_id] if float(study.image.min()) == float(study.image.max()) else []
    if constant:
        problems.append(f"{len(constant)} studies hold one value in every voxel ({', '.join(constant[:3])}): blank "
                        "or unreadable images; check or remove them")
    if empty_labels:
        problems.append(f"{empty_labels} label map(s) hold background only")
    return stats


def _write(result: IngestResult, out: str | Path, overwrite: bool, data: Path, config: dict) -> Path:
    with atomic_output_dir(out, overwrite) as tmp:
        save_catalog_folder(tmp, result.catalog)
        inputs = {"data": str(data), "catalog_fingerprint": result.fingerprint}
        if result.labels_csv is not None:
            inputs.update(labels_csv=str(result.labels_csv.resolve()), labels_csv_sha256=provenance.sha256_file(result.labels_csv))
        provenance.write_json(tmp / INGEST_FILE, provenance.record(
            "ingest", config, inputs, seeds={"split": config["seed"]}, dataset={"kind": result.kind, "name": result.name},
            label_names={str(k): v for k, v in (result.label_names or {}).items()}, problems=result.problems,
            n_studies=len(result.catalog)))
    return Path(out).expanduser().resolve()
