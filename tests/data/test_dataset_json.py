"""MSD and nnU-Net v2 dataset folders: both layouts read, and a dataset.json that disagrees with its files is refused."""

import json

import numpy as np
import pytest

from conftest import save_nifti
from medsynth.data.readers import load_study, scan
from medsynth.data.study import Study
from medsynth.data.writers import write_msd_dataset
from medsynth.errors import DataError


def _studies(n=3, shape=(6, 5, 4)):
    rng = np.random.default_rng(0)
    for k in range(n):
        yield Study(rng.normal(size=(1, *shape)).astype(np.float32), np.diag([1.5, 1.5, 3.0, 1.0]), "MR",
                    (rng.integers(0, 3, shape)).astype(np.uint8), study_id=f"case_{k}")


def _nnunet(root, cases=("c1", "c2"), channels=2, labels=None):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for case in cases:
        for c in range(channels):
            save_nifti(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", np.full((4, 4, 3), c, np.float32), np.eye(4))
        label = np.zeros((4, 4, 3), np.uint8)
        label[1:3, 1:3, 1] = 1
        save_nifti(root / "labelsTr" / f"{case}.nii.gz", label, np.eye(4))
    meta = {"channel_names": {str(c): ["T2", "ADC"][c] for c in range(channels)},
            "labels": labels or {"background": 0, "gland": 1}, "numTraining": len(cases), "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return meta


def test_msd_dataset_written_by_medsynth_reads_back(tmp_path):
    originals = list(_studies())
    write_msd_dataset(tmp_path, originals, "test", {0: "bg", 1: "a", 2: "b"}, "MRI")
    found = scan(tmp_path)
    assert found.kind == "MSD dataset" and found.label_names == {0: "bg", 1: "a", 2: "b"}
    for ref, original in zip(found.refs, originals):
        study = load_study(ref, found.label_names)
        assert study.study_id == original.study_id and study.modality == "MR"
        np.testing.assert_array_equal(study.image, original.image)
        np.testing.assert_array_equal(study.label, original.label)
        np.testing.assert_allclose(study.affine, original.affine)


def test_nnunet_v2_channels_are_stacked(tmp_path):
    _nnunet(tmp_path)
    found = scan(tmp_path)
    assert found.kind == "nnU-Net v2 dataset" and [r.study_id for r in found.refs] == ["c1", "c2"]
    study = load_study(found.refs[0], found.label_names)
    assert study.image.shape == (2, 4, 4, 3) and study.image[1].max() == 1 and study.modality == "MR"


def test_num_training_that_disagrees_is_refused(tmp_path):
    meta = _nnunet(tmp_path)
    meta["numTraining"] = 5
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="numTraining=5 but 2"):
        scan(tmp_path)


def test_missing_channel_file_is_refused(tmp_path):
    _nnunet(tmp_path)
    (tmp_path / "imagesTr" / "c2_0001.nii.gz").unlink()
    with pytest.raises(DataError, match="case c2 has channel files"):
        scan(tmp_path)


def test_file_ending_that_matches_nothing_is_refused(tmp_path):
    meta = _nnunet(tmp_path)
    meta["file_ending"] = ".nii"
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="file_ending"):
        scan(tmp_path)


def test_label_value_not_in_dataset_json_is_refused(tmp_path):
    _nnunet(tmp_path, labels={"background": 0})
    found = scan(tmp_path)
    with pytest.raises(DataError, match=r"values \[1\]"):
        load_study(found.refs[0], found.label_names)


def test_training_list_naming_a_missing_file_is_refused(tmp_path):
    write_msd_dataset(tmp_path, _studies(2), "test", {0: "bg", 1: "a", 2: "b"}, "MRI")
    (tmp_path / "labelsTr" / "case_1.nii.gz").unlink()
    with pytest.raises(DataError, match="does not exist"):
        scan(tmp_path)


def test_broken_dataset_json_is_refused(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        scan(tmp_path)
