"""NIfTI reading: geometry survives, channels and label partners are found, bad files get one clear error."""

import gzip

import numpy as np
import pytest

from conftest import oblique_affine, save_nifti
from medsynth.data.readers import load_study, scan
from medsynth.data.study import Study
from medsynth.data.writers import write_study_nifti
from medsynth.errors import DataError


def test_oblique_affine_round_trips_to_1e4_mm(tmp_path):
    affine = oblique_affine()
    image = np.random.default_rng(0).normal(size=(1, 9, 8, 7)).astype(np.float32)
    labels = (np.arange(9 * 8 * 7).reshape(9, 8, 7) % 3).astype(np.uint8)
    write_study_nifti(Study(image, affine, "MR", labels, study_id="case"), tmp_path / "case.nii.gz", tmp_path / "case_label.nii.gz")
    study = load_study(scan(tmp_path).refs[0])
    assert np.abs(study.affine - affine).max() < 1e-4
    np.testing.assert_allclose(study.spacing, (0.8, 0.9, 2.5), atol=1e-4)
    np.testing.assert_array_equal(study.image, image)
    np.testing.assert_array_equal(study.label, labels)


def test_four_d_nifti_becomes_channels_first(tmp_path):
    data = np.random.default_rng(1).normal(size=(6, 5, 4, 2)).astype(np.float32)
    save_nifti(tmp_path / "multi.nii.gz", data, np.eye(4))
    study = load_study(scan(tmp_path / "multi.nii.gz").refs[0])
    assert study.image.shape == (2, 6, 5, 4)
    np.testing.assert_array_equal(study.image[1], data[..., 1])


def test_two_d_nifti_is_a_two_d_study(tmp_path):
    save_nifti(tmp_path / "slice.nii.gz", np.ones((16, 12, 1), np.float32), np.diag([0.5, 0.7, 3.0, 1.0]))
    study = load_study(scan(tmp_path / "slice.nii.gz").refs[0])
    assert study.spatial_dims == 2 and study.spacing == (0.5, 0.7)


def test_folder_pairs_images_with_label_files(tmp_path):
    for case in ("a", "b"):
        save_nifti(tmp_path / f"{case}_image.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
        save_nifti(tmp_path / f"{case}_label.nii.gz", np.ones((4, 4, 4), np.uint8), np.eye(4))
    found = scan(tmp_path)
    assert [r.study_id for r in found.refs] == ["a", "b"]
    assert all(r.label.endswith("_label.nii.gz") for r in found.refs)


def test_corrupt_nifti_gets_one_clear_error(tmp_path):
    (tmp_path / "broken.nii.gz").write_bytes(gzip.compress(b"not a nifti header at all" * 20)[:60])
    with pytest.raises(DataError, match="not a readable NIfTI file"):
        load_study(scan(tmp_path / "broken.nii.gz").refs[0])


@pytest.mark.parametrize("label_data, label_affine, message", [
    (np.zeros((5, 4, 4), np.uint8), np.eye(4), "shape"),
    (np.zeros((4, 4, 4), np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]), "affines differ"),
    (np.full((4, 4, 4), 0.5, np.float32), np.eye(4), "non-integer"),
    (np.full((4, 4, 4), -1, np.int16), np.eye(4), "negative"),
])
def test_label_map_that_does_not_fit_the_image_is_refused(tmp_path, label_data, label_affine, message):
    save_nifti(tmp_path / "x.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    save_nifti(tmp_path / "x_label.nii.gz", label_data, label_affine)
    with pytest.raises(DataError, match=message):
        load_study(scan(tmp_path).refs[0])


def test_study_refuses_label_on_another_grid():
    with pytest.raises(DataError, match="same grid"):
        Study(np.zeros((1, 4, 4, 4)), np.eye(4), "CT", np.zeros((4, 4, 3), np.uint8))
