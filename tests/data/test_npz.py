"""MedMNIST-style .npz files: each row is a study with its class; 2D, RGB and 3D arrays read."""

import numpy as np
import pytest

from medsynth.data.readers import load_study, scan
from medsynth.errors import DataError


def test_two_d_npz_rows_become_studies_with_classes(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mini.npz", train_images=rng.integers(0, 255, (5, 28, 28), dtype=np.uint8),
             train_labels=np.array([[0], [1], [1], [0], [1]]), test_images=np.zeros((2, 28, 28), np.uint8),
             test_labels=np.array([[1], [0]]))
    found = scan(tmp_path / "mini.npz")
    assert [r.study_id for r in found.refs][:2] == ["train_00000", "train_00001"] and len(found.refs) == 7
    assert found.classes["test_00001"] == {"class": 0, "source_split": "test"}
    study = load_study(found.refs[1])
    assert study.image.shape == (1, 28, 28) and study.spacing == (1.0, 1.0)


def test_rgb_and_three_d_npz(tmp_path):
    np.savez(tmp_path / "rgb.npz", train_images=np.zeros((2, 28, 28, 3), np.uint8), train_labels=np.zeros((2, 1)))
    np.savez(tmp_path / "vol.npz", train_images=np.zeros((2, 28, 28, 28), np.uint8), train_labels=np.zeros((2, 1)))
    assert load_study(scan(tmp_path / "rgb.npz").refs[0]).image.shape == (3, 28, 28)
    assert load_study(scan(tmp_path / "vol.npz").refs[0]).image.shape == (1, 28, 28, 28)


def test_npz_without_image_arrays_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="_images"):
        scan(tmp_path / "other.npz")
