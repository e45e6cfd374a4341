"""Preprocessing: RAS orientation, target spacing, nearest-neighbour labels, invertible intensity maps."""

import numpy as np
import pytest

from medsynth.data.preprocess import PreprocessSpec, preprocess
from medsynth.data.study import Study


def _lps_study(modality="CT"):
    rng = np.random.default_rng(0)
    image = rng.uniform(-1000, 1000, (1, 10, 12, 8)).astype(np.float32)
    label = rng.integers(0, 4, (10, 12, 8)).astype(np.uint8)
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])  # LPS-oriented voxel axes
    return Study(image, affine, modality, label)


def test_output_is_ras_at_target_spacing_and_shape():
    out = preprocess(_lps_study(), PreprocessSpec(spacing=(1.0, 1.0, 1.5), shape=(16, 16, 16)))
    assert tuple(out.image.shape) == (1, 16, 16, 16) and tuple(out.label.shape) == (1, 16, 16, 16)
    assert np.all(np.diag(out.affine)[:3] > 0)  # RAS: every axis points to +x, +y, +z
    np.testing.assert_allclose(np.abs(np.diag(out.affine))[:3], (1.0, 1.0, 1.5))


def test_labels_are_resampled_nearest_neighbour():
    study = _lps_study()
    out = preprocess(study, PreprocessSpec(spacing=(0.7, 1.3, 2.0)))
    assert set(np.unique(out.label.numpy())) <= set(np.unique(study.label))


def test_ct_window_maps_to_unit_range_and_inverts():
    study = _lps_study("CT")
    out = preprocess(study, PreprocessSpec(ct_window=(-1000.0, 1000.0)))
    assert out.image.min() >= -1 and out.image.max() <= 1
    back = out.intensity.to_physical(out.image.numpy())
    # orientation flips the first two axes; values are unchanged
    np.testing.assert_allclose(back[0], study.image[0][::-1, ::-1, :], atol=0.05)


@pytest.mark.parametrize("modality", ["MR", "OT"])
def test_mr_uses_per_volume_percentiles(modality):
    study = _lps_study(modality)
    study.image *= 37.0
    out = preprocess(study, PreprocessSpec(percentiles=(1.0, 99.0)))
    lo, hi = np.percentile(study.image, [1.0, 99.0])
    np.testing.assert_allclose([out.intensity.lo[0], out.intensity.hi[0]], [lo, hi], rtol=1e-5)
    inside = (study.image > lo) & (study.image < hi)
    np.testing.assert_allclose(out.intensity.to_physical(out.intensity.to_unit(study.image))[inside], study.image[inside], rtol=1e-4)


def test_padding_uses_the_low_end_of_the_range():
    out = preprocess(_lps_study(), PreprocessSpec(shape=(20, 20, 20)))
    assert float(out.image[0, 0, 0, 0]) == -1.0 and int(out.label[0, 0, 0, 0]) == 0


def test_two_d_study_preprocesses():
    study = Study(np.random.default_rng(1).uniform(0, 255, (1, 28, 28)), np.eye(4), "OT")
    out = preprocess(study, PreprocessSpec(spacing=(0.5, 0.5), shape=(32, 32)))
    assert tuple(out.image.shape) == (1, 32, 32)
