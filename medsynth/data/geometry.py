"""Affine geometry: RAS/LPS conventions, spacing, and DICOM image-plane attributes to affines."""

from __future__ import annotations

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


def spacing_from_affine(affine: np.ndarray, spatial_dims: int = 3) -> tuple[float, ...]:
    """Voxel size (mm) along each array axis: the length of each of the affine's first columns."""
    norms = np.linalg.norm(np.asarray(affine)[:3, :spatial_dims], axis=0)
    return tuple(float(round(n, 6)) for n in norms)


def affine_from_dicom(
    first_position: np.ndarray, orientation: np.ndarray, pixel_spacing: np.ndarray, slice_step: np.ndarray
) -> np.ndarray:
    """RAS affine of a slice stack stored as array[column, row, slice].

    Args:
        first_position: ImagePositionPatient of the first slice (LPS, mm).
        orientation: ImageOrientationPatient: row direction cosines then column direction cosines (LPS).
        pixel_spacing: PixelSpacing as DICOM stores it, [row spacing (dy), column spacing (dx)] in mm.
        slice_step: vector (LPS, mm) from one slice's position to the next.
    """
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    dy, dx = float(pixel_spacing[0]), float(pixel_spacing[1])
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dx   # along a row: increasing column index
    lps[:3, 1] = col_dir * dy   # down a column: increasing row index
    lps[:3, 2] = slice_step
    lps[:3, 3] = first_position
    return LPS_TO_RAS @ lps


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal of the image plane (row direction x column direction)."""
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    return normal / np.linalg.norm(normal)
