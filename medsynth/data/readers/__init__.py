"""Readers, chosen by what a path is. A registry: add a format by adding one entry to READERS."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from medsynth.data.readers.base import Scan, StudyRef
from medsynth.data.readers.dataset_json import is_dataset_folder, load_dataset_case, scan_dataset
from medsynth.data.readers.dicom import is_dicom_folder, load_dicom, looks_like_dicom, scan_dicom
from medsynth.data.readers.nifti import is_nifti, load_nifti, scan_nifti
from medsynth.data.readers.npz import is_npz, load_npz, scan_npz
from medsynth.data.study import Study
from medsynth.errors import DataError


@dataclass(frozen=True)
class Reader:
    name: str
    matches: Callable[[Path], bool]
    scan: Callable[[Path], Scan]
    load: Callable[[StudyRef, "dict[int, str] | None"], Study]


def _nifti_folder(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() and is_nifti(p) for p in path.iterdir())


# Checked in order: a dataset.json wins over loose NIfTI files; DICOM folders are searched recursively last.
READERS: dict[str, Reader] = {
    "dataset": Reader("dataset", is_dataset_folder, scan_dataset, load_dataset_case),
    "nifti": Reader("nifti", lambda p: (p.is_file() and is_nifti(p)) or _nifti_folder(p), scan_nifti, load_nifti),
    "npz": Reader("npz", is_npz, scan_npz, load_npz),
    "dicom": Reader("dicom", lambda p: (p.is_file() and looks_like_dicom(p)) or is_dicom_folder(p), scan_dicom, load_dicom),
}


def scan(path: str | Path, modality: str | None = None) -> Scan:
    """Find every study under `path` with the reader that fits it; `modality` overrides what the files say."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist; check the path.")
    if (path / "imagesTr").is_dir() and not (path / "dataset.json").is_file():
        raise DataError(f"{path} has imagesTr/ but no dataset.json; add one naming its channels and labels (MSD: "
                        "modality, labels, training; nnU-Net v2: channel_names, labels, file_ending).")
    for reader in READERS.values():
        if reader.matches(path):
            found = reader.scan(path)
            if not found.refs:
                raise DataError(f"{path} holds no studies.")
            return one_modality(found, path, modality)
    raise DataError(f"{path} is not a dataset medsynth can read; give a NIfTI file or folder, an MSD or nnU-Net "
                    "folder with dataset.json, a DICOM folder, or a MedMNIST .npz file.")


def refuse_mixed(found: Scan, path: Path) -> None:
    """A dataset holds one modality: a tree of CT and MR series is refused, saying how to pick one."""
    stated = Counter(ref.modality for ref in found.refs)
    if len(stated) > 1:
        counts = ", ".join(f"{m}: {n}" for m, n in sorted(stated.items()))
        raise DataError(f"{path} mixes modalities ({counts} studies); a dataset holds one, so pass --modality "
                        f"{stated.most_common(1)[0][0]} (or another) to keep only those studies, or ingest them apart.")


def one_modality(found: Scan, path: Path, modality: str | None) -> Scan:
    """With `modality`, a mixed tree keeps only the studies of that modality (the others are left out and listed);
    an unmixed dataset takes `modality` over what its files say. Without it every study keeps its own."""
    stated = Counter(ref.modality for ref in found.refs)
    if len(stated) > 1 and modality is not None:
        kept = [ref for ref in found.refs if ref.modality == modality]
        if not kept:
            raise DataError(f"{path} holds no {modality} studies (it has {', '.join(sorted(stated))}); pick one of those.")
        found.problems.append(f"kept the {len(kept)} {modality} studies; left out {len(found.refs) - len(kept)} of "
                              f"other modalities ({', '.join(sorted(set(stated) - {modality}))})")
        found.refs = kept
        return found
    if modality:
        found.refs = [replace(ref, modality=modality) for ref in found.refs]
    return found


def load_study(ref: StudyRef, label_names: dict[int, str] | None = None) -> Study:
    """Read one study's pixels (and label map) with the reader that found it."""
    if ref.fmt not in READERS:
        raise DataError(f"unknown study format {ref.fmt!r}; known formats: {', '.join(READERS)}.")
    return READERS[ref.fmt].load(ref, label_names)


__all__ = ["READERS", "Reader", "Scan", "StudyRef", "load_study", "one_modality", "refuse_mixed", "scan"]
