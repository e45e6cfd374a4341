"""What ingest used to let through: ragged CSVs, mixed modalities, blank images, bare class ids, imagesTr without
dataset.json, DICOM series without a SeriesInstanceUID keyed by their local path; and a numeric class column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import assert_user_error, oblique_affine, run_cli, save_nifti, write_dicom_series
from medsynth.config import load_config
from medsynth.data.ingest import ingest
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.errors import DataError, MedsynthError
from medsynth.training.trainer import train


def nifti_folder(folder, n=3):
    folder.mkdir()
    for k in range(n):
        save_nifti(folder / f"case{k}.nii.gz", np.random.default_rng(k).normal(size=(6, 6, 4)).astype(np.float32),
                   np.eye(4))
    return folder


def test_a_ragged_labels_csv_is_refused_naming_the_line(tmp_path):
    data = nifti_folder(tmp_path / "data")
    for text, line in (("case_id,pathology,age,sex,site\ncase0,normal,56,F\n", 2),
                       ("case_id,pathology\ncase0,normal\ncase1,lesion,71\n", 3)):
        (tmp_path / "labels.csv").write_text(text)
        assert_user_error(run_cli("ingest", data, "--labels", tmp_path / "labels.csv"), f"line {line} has",
                          "fields but its header has")


def test_blank_images_are_reported_and_imagestr_without_dataset_json_says_what_is_missing(tmp_path):
    data = nifti_folder(tmp_path / "data")
    save_nifti(data / "case9.nii.gz", np.zeros((6, 6, 4), np.float32), np.eye(4))
    assert any("one value in every voxel (case9)" in p for p in ingest(data, show_progress=False).problems)
    (tmp_path / "task" / "imagesTr").mkdir(parents=True)
    (tmp_path / "task" / "labelsTr").mkdir()
    assert_user_error(run_cli("ingest", tmp_path / "task"), "imagesTr/ but no dataset.json", "channel_names")


def test_mixed_modalities_are_refused_unless_one_is_picked(tmp_path):
    volume = np.random.default_rng(0).uniform(0, 1000, (8, 8, 4)).astype(np.float32)
    write_dicom_series(tmp_path / "tree" / "ct", volume, oblique_affine(), modality="CT")
    write_dicom_series(tmp_path / "tree" / "mr", volume, oblique_affine(), modality="MR", intercept=0.0)
    assert_user_error(run_cli("ingest", tmp_path / "tree"), "mixes modalities", "CT: 1", "MR: 1", "--modality")
    picked = ingest(tmp_path / "tree", modality="MR", show_progress=False)
    assert list(picked.catalog["modality"]) == ["MR"] and any("left out 1" in p for p in picked.problems)


def test_a_series_without_uid_is_keyed_by_its_content_not_its_path(tmp_path):
    volume = np.random.default_rng(1).uniform(0, 1000, (8, 8, 4)).astype(np.float32)
    write_dicom_series(tmp_path / "a" / "s", volume, oblique_affine())
    for path in (tmp_path / "a" / "s").glob("*.dcm"):
        import pydicom

        ds = pydicom.dcmread(path)
        del ds.SeriesInstanceUID
        ds.save_as(path)
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    keys = [ingest(tmp_path / d, show_progress=False).catalog["key"].iloc[0] for d in ("a", "b")]
    assert keys[0] == keys[1] and str(tmp_path) not in keys[0] and keys[0].startswith("no-series-uid:")


def test_class_ids_get_names_at_ingest(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", train_images=rng.integers(0, 255, (6, 8, 8), dtype=np.uint8),
             train_labels=np.array([[0], [1], [0], [1], [0], [0]]),
             test_images=rng.integers(0, 255, (2, 8, 8), dtype=np.uint8), test_labels=np.array([[0], [1]]))
    named = ingest(tmp_path / "m.npz", class_names="0=malignant,1=benign", show_progress=False).catalog
    assert sorted(set(named["class"])) == ["benign", "malignant"]
    assert_user_error(run_cli("ingest", tmp_path / "m.npz", "--class-names", "0=malignant"), "no name for class value '1'")
    assert_user_error(run_cli("ingest", tmp_path / "m.npz", "--class-names", "zero"), "must look like 0=malignant")


def test_a_numeric_class_column_with_many_values_is_refused_as_a_covariate(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(dims=2, size=16, cases=60), show_progress=False)
    labels = pd.read_csv(data / "labels.csv")
    assert labels["age"].nunique() > 20
    with pytest.raises(MedsynthError, match="'age' holds .* distinct numbers .* not classes"):
        train(load_config("tiny_2d.yaml", ["conditioning.class_column=age"]), data, tmp_path / "run",
              show_progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError):
        ingest(tmp_path / "missing", show_progress=False)
