"""Fixtures the tests build themselves: NIfTI files, DICOM series with oblique geometry, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from medsynth.data.geometry import LPS_TO_RAS

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path inside ../shared/data, or skip the test when that folder is not there (a user's fresh clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the workplace's shared real data), which is absent")
    return path


def oblique_affine(spacing=(0.8, 0.9, 2.5), angles=(0.2, -0.15, 0.1), origin=(-40.5, 12.25, 70.0)) -> np.ndarray:
    """A RAS affine with rotations about all three axes and anisotropic spacing."""
    rx, ry, rz = angles
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) \
        @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return path


def write_dicom_series(folder: Path, volume: np.ndarray, affine_ras: np.ndarray, modality: str = "CT",
                       intercept: float = -1024.0, slope: float = 1.0, series_uid: str | None = None,
                       series_number: int = 1, patient_id: str = "TEST01") -> list[Path]:
    """Write `volume[i, j, k]` (column, row, slice) as a single-frame series whose geometry is `affine_ras`."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_TO_RAS @ affine_ras
    dx, dy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    iop = np.concatenate([lps[:3, 0] / dx, lps[:3, 1] / dy])
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    paths = []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = sop_class
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.PatientID, ds.PatientName, ds.SeriesNumber = modality, patient_id, "TEST^PHANTOM", series_number
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
        ds.PixelSpacing = [f"{dy:.6f}", f"{dx:.6f}"]
        ds.SliceThickness = f"{np.linalg.norm(lps[:3, 2]):.6f}"
        stored = np.round((volume[:, :, k].T - intercept) / slope).astype(np.uint16)  # (rows, columns)
        ds.set_pixel_data(stored, "MONOCHROME2", 16)
        ds.RescaleIntercept, ds.RescaleSlope = f"{intercept:g}", f"{slope:g}"
        path = folder / f"slice_{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m medsynth ARGS` as a user would, capturing output."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "medsynth", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Non-zero exit, one sentence on stderr naming the problem, and no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    message = result.stderr.strip()
    assert message.startswith("error:") and len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture
def ct_volume() -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.round(rng.uniform(-1000, 1500, (12, 10, 6))).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny class- and mask-conditioned 3D run on 60 phantoms (24 held out) and 10 synthetic studies."""
    root = tmp_path_factory.mktemp("audit")
    for args in (["phantom", root / "data", "--cases", "60", "--size", "16"],
                 ["ingest", root / "data", "--out", root / "cat", "--holdout", "0.4"],
                 ["train", root / "cat", "--config", "tiny_3d.yaml", "--out", root / "run"],
                 ["generate", root / "run", "--out", root / "syn", "--n", "10"]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """`medsynth demo --quick` run once for the session: (its folder, the finished process)."""
    demo = tmp_path_factory.mktemp("demo") / "demo"
    return demo, run_cli("demo", "--quick", "--out", demo, timeout=900)
