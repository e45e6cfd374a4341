"""DICOM folders: group files by SeriesInstanceUID, order slices along the normal, rescale, build the RAS affine."""

from __future__ import annotations

import hashlib
import functools
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from medsynth.data.geometry import LPS_TO_RAS, affine_from_dicom, slice_normal
from medsynth.data.readers.base import Scan, StudyRef
from medsynth.data.study import Study, normalise_modality
from medsynth.errors import DataError, first_line

_HEADER_TAGS = [
    "SOPClassUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "PatientID",
    "ReferencedSeriesSequence", "SegmentSequence",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "NumberOfFrames",
    "InstanceNumber", "SliceThickness", "SpacingBetweenSlices",
]
_NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "SR", "RTPLAN", "RTDOSE", "PR", "KO", "DOC"}


@dataclass(frozen=True)
class SliceHeader:
    path: str
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    thickness: float


def looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() and looks_like_dicom(p) for p in path.rglob("*"))


_NO_UID = "no-series-uid:"


def content_key(slices: list[SliceHeader]) -> str:
    """The key of a series without a SeriesInstanceUID: a hash of its files' bytes, so it names the same series
    wherever the folder is (never a local path)."""
    digest = hashlib.sha256()
    for name in sorted(hashlib.sha256(Path(s.path).read_bytes()).hexdigest() for s in slices):
        digest.update(name.encode())
    return f"{_NO_UID}{digest.hexdigest()[:32]}"


@functools.lru_cache(maxsize=64)
def _series_in(location: str) -> tuple[dict[str, list[SliceHeader]], dict[str, dict], list[str]]:
    """Headers of every image slice in a file or under a folder, grouped by series; series info (with the SEG
    files that reference each series); and the non-image files skipped."""
    series: dict[str, list[SliceHeader]] = defaultdict(list)
    info: dict[str, dict] = {}
    skipped: list[str] = []
    segs: dict[str, list[str]] = defaultdict(list)
    segment_names: dict[str, dict[int, str]] = {}
    root = Path(location)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and looks_like_dicom(p))
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
            raise DataError(f"{path} is not a readable DICOM file ({first_line(err, 160)}); remove or replace it.") from None
        modality = str(ds.get("Modality", ""))
        if modality == "SEG" and ds.get("ReferencedSeriesSequence"):
            segs[str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)].append(str(path))
            segment_names[str(path)] = {int(s.SegmentNumber): str(s.get("SegmentLabel", f"segment {s.SegmentNumber}"))
                                        for s in ds.get("SegmentSequence", [])}
            continue
        if modality in _NON_IMAGE_MODALITIES or "ImagePositionPatient" not in ds:
            skipped.append(f"{path.name} ({modality or 'no image geometry'})")
            continue
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DataError(f"{path} is a multi-frame (enhanced) DICOM image, which medsynth does not read yet; "
                            "convert the series to NIfTI (e.g. with dcm2niix) and ingest that.")
        uid = str(ds.get("SeriesInstanceUID", "")) or f"{_NO_UID}{path.parent}"   # renamed by content below
        try:
            series[uid].append(SliceHeader(
                str(path), tuple(float(v) for v in ds.ImagePositionPatient),
                tuple(float(v) for v in ds.ImageOrientationPatient),
                tuple(float(v) for v in ds.PixelSpacing), int(ds.Rows), int(ds.Columns),
                float(ds.get("SliceThickness") or ds.get("SpacingBetweenSlices") or 1.0)))
        except (AttributeError, TypeError, ValueError) as err:
            raise DataError(f"{path} lacks usable image-plane attributes ({first_line(err, 160)}); "
                            "it needs ImagePositionPatient, ImageOrientationPatient, PixelSpacing, Rows and Columns.") from None
        info.setdefault(uid, {"modality": modality, "patient_id": str(ds.get("PatientID", "")),
                              "series_number": ds.get("SeriesNumber"), "folder": str(path.parent)})
    for uid in [u for u in series if u.startswith(_NO_UID)]:
        key = content_key(series[uid])
        series[key], info[key] = series.pop(uid), info.pop(uid)
    for uid, paths in segs.items():
        if uid in info:
            info[uid]["segs"] = paths
            info[uid]["segment_names"] = {k: v for p in paths for k, v in segment_names[p].items()}
        else:
            skipped += [f"{Path(p).name} (SEG of a series not in the folder)" for p in paths]
    return dict(series), info, skipped


def ordered_slices(slices: list[SliceHeader], where: str) -> tuple[list[SliceHeader], np.ndarray]:
    """Slices sorted along the plane normal, and the step between neighbours (LPS, mm); raises on a broken series."""
    first = slices[0]
    for s in slices[1:]:
        if (s.rows, s.columns) != (first.rows, first.columns) or not np.allclose(s.pixel_spacing, first.pixel_spacing, atol=1e-4):
            raise DataError(f"{where} mixes slices of different size or pixel spacing ({Path(s.path).name}); "
                            "keep one series per folder or remove the stray files.")
        if not np.allclose(s.orientation, first.orientation, atol=1e-4):
            raise DataError(f"{where} mixes slices of different orientation ({Path(s.path).name}); "
                            "keep one series per folder or remove the stray files.")
    normal = slice_normal(np.array(first.orientation))
    ordered = sorted(slices, key=lambda s: float(np.dot(s.position, normal)))
    if len(ordered) == 1:
        return ordered, normal * first.thickness
    heights = np.array([np.dot(s.position, normal) for s in ordered])
    gaps = np.diff(heights)
    if np.any(gaps < 1e-3):
        raise DataError(f"{where} holds two slices at the same position; remove the duplicate files.")
    if gaps.max() > 1.5 * gaps.min():
        at = int(np.argmax(gaps))
        raise DataError(f"{where} is missing slices: positions jump by {gaps.max():.3g} mm between slices "
                        f"{at + 1} and {at + 2} where the spacing is {np.median(gaps):.3g} mm; restore the missing files.")
    positions = np.array([s.position for s in ordered])
    return ordered, (positions[-1] - positions[0]) / (len(ordered) - 1)


def scan_dicom(path: Path) -> Scan:
    """A folder (searched recursively; one study per series) or a single DICOM file (a one-slice study)."""
    location = path.resolve()
    root = location if location.is_dir() else location.parent
    series, info, skipped = _series_in(str(location))
    if not series:
        raise DataError(f"{path} holds no DICOM image series" + (f" (only {', '.join(skipped[:3])})" if skipped else "") + ".")
    per_folder: dict[str, list[str]] = defaultdict(list)
    for uid in series:
        per_folder[info[uid]["folder"]].append(uid)
    refs = []
    for folder, uids in sorted(per_folder.items()):
        rel = Path(folder).relative_to(root)
        base = _safe_id(location.stem if location.is_file() else (str(rel) if str(rel) != "." else root.name))
        for n, uid in enumerate(sorted(uids, key=lambda u: (info[u]["series_number"] or 0, u))):
            where = f"DICOM series {info[uid]['series_number'] or uid} in {folder}"
            ordered_slices(series[uid], where)  # validate geometry now, before any pixel is read
            study_id = base if len(uids) == 1 else f"{base}_s{info[uid]['series_number'] or n + 1}"
            seg_files = info[uid].get("segs", [])
            if len(seg_files) > 1:
                raise DataError(f"{where} is referenced by {len(seg_files)} SEG files; keep one segmentation per series.")
            refs.append(StudyRef(study_id, "dicom", (str(location),), label=seg_files[0] if seg_files else "", key=uid,
                                 subject_id=info[uid]["patient_id"] or study_id,
                                 modality=normalise_modality(info[uid]["modality"])))
    problems = [f"skipped {len(skipped)} non-image DICOM file(s): {', '.join(skipped[:3])}"] if skipped else []
    vocabulary = None  # label ids to names from the SEGs' segments; None when no series has a SEG
    for ref in (r for r in refs if r.label):
        vocabulary = vocabulary or {0: "background"}
        for number, name in info[ref.key]["segment_names"].items():
            vocabulary.setdefault(number, name)
    return Scan("DICOM folder", root.name, refs, label_names=vocabulary, problems=problems)


def seg_label_map(path: str, shape: tuple[int, ...], affine_ras: np.ndarray) -> np.ndarray:
    """A DICOM SEG as an integer label map on the image grid (segment number = label id), matched in world space."""
    import highdicom as hd

    try:
        volume = hd.seg.segread(path).get_volume(combine_segments=True)
    except Exception as err:  # highdicom raises many types for malformed or overlapping segmentations
        raise DataError(f"{path}: cannot read this DICOM SEG ({first_line(err, 160)}).") from None
    seg_index = np.argwhere(volume.array > 0)  # (slice, row, column) of labelled voxels
    labels = np.zeros(shape, np.uint8)
    if len(seg_index):
        to_image = np.linalg.inv(affine_ras) @ LPS_TO_RAS @ volume.affine
        target = (to_image[:3, :3] @ seg_index.T + to_image[:3, 3:4]).T
        rounded = np.round(target).astype(int)
        if np.abs(target - rounded).max() > 0.05 or (rounded < 0).any() or (rounded >= np.array(shape)).any():
            raise DataError(f"{path}: the SEG's frames do not lie on the image series' grid; "
                            "medsynth reads SEGs made on the referenced images.")
        labels[tuple(rounded.T)] = volume.array[tuple(seg_index.T)]
    return labels


def load_dicom(ref: StudyRef, label_names: dict[int, str] | None) -> Study:
    series, _, _ = _series_in(ref.images[0])
    if ref.key not in series:
        raise DataError(f"DICOM series {ref.key} is no longer in {ref.images[0]}; ingest the folder again.")
    ordered, step = ordered_slices(series[ref.key], f"DICOM series of {ref.study_id}")
    planes = []
    for header in ordered:
        try:
            ds = pydicom.dcmread(header.path)
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as err:  # pydicom raises many types for corrupt or undecodable pixel data
            raise DataError(f"{header.path}: cannot decode its pixel data ({first_line(err, 160)}); "
                            "the file is corrupt or uses a transfer syntax no installed decoder handles.") from None
        if pixels.ndim != 2:
            raise DataError(f"{header.path}: expected one monochrome frame, got pixel array of shape {pixels.shape}.")
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        planes.append(pixels * slope + intercept)
    volume = np.stack(planes, axis=-1).transpose(1, 0, 2)  # (rows, cols, k) -> (column i, row j, slice k)
    first = ordered[0]
    affine = affine_from_dicom(np.array(first.position), np.array(first.orientation), np.array(first.pixel_spacing), step)
    label = seg_label_map(ref.label, volume.shape, affine) if ref.label else None
    return Study(volume[None], affine, ref.modality, label, study_id=ref.study_id, subject_id=ref.subject_id,
                 source=str(Path(first.path).parent))


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "series"


