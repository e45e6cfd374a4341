"""Labels CSV, catalog and split: labels match cases, subjects never straddle the split, catalogs reload."""

import numpy as np
import pandas as pd
import pytest

from conftest import save_nifti
from medsynth.data.catalog import catalog_fingerprint, make_split, read_catalog, ref_from_row
from medsynth.data.ingest import ingest
from medsynth.data.readers import load_study
from medsynth.errors import DataError


@pytest.fixture
def nifti_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for k in range(8):
        save_nifti(folder / f"s{k}.nii.gz", np.full((4, 4, 4), k, np.float32), np.eye(4))
    return folder


def test_labels_csv_naming_unknown_case_is_refused(nifti_folder, tmp_path):
    pd.DataFrame({"case": ["s0", "nobody"], "grade": [1, 2]}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError, match="1 case\\(s\\) not in the dataset \\('nobody'\\)"):
        ingest(nifti_folder, labels=tmp_path / "labels.csv", show_progress=False)


def test_labels_csv_with_duplicate_case_is_refused(nifti_folder, tmp_path):
    pd.DataFrame({"case": ["s0", "s0"], "grade": [1, 2]}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError, match="more than once"):
        ingest(nifti_folder, labels=tmp_path / "labels.csv", show_progress=False)


def test_studies_of_one_subject_stay_on_one_side(nifti_folder, tmp_path):
    subjects = ["p1", "p1", "p2", "p2", "p3", "p3", "p4", "p4"]
    pd.DataFrame({"case": [f"s{k}" for k in range(8)], "subject_id": subjects, "grade": [0, 0, 1, 1, 0, 0, 1, 1]}) \
        .to_csv(tmp_path / "labels.csv", index=False)
    for seed in range(5):
        catalog = ingest(nifti_folder, labels=tmp_path / "labels.csv", holdout=0.5, seed=seed, show_progress=False).catalog
        assert (catalog.groupby("subject_id")["split"].nunique() == 1).all()
        assert catalog["subject_id"].tolist() == subjects


def test_split_is_seeded_and_stratified():
    subjects = pd.Series([f"p{k}" for k in range(40)])
    classes = pd.Series(["rare"] * 8 + ["common"] * 32)
    first, again = make_split(subjects, 0.25, seed=3, strata=classes), make_split(subjects, 0.25, seed=3, strata=classes)
    assert first.equals(again) and not first.equals(make_split(subjects, 0.25, seed=4, strata=classes))
    assert (first[:8] == "holdout").sum() == 2 and (first[8:] == "holdout").sum() == 8


def test_catalog_reloads_and_loads_the_same_studies(nifti_folder, tmp_path):
    result = ingest(nifti_folder, out=tmp_path / "cat", show_progress=False)
    catalog = read_catalog(tmp_path / "cat" / "catalog.csv")
    assert len(catalog) == 8 and set(catalog["split"]) == {"train", "holdout"}
    assert catalog_fingerprint(catalog) == result.fingerprint
    study = load_study(ref_from_row(catalog.iloc[3]))
    assert study.study_id == "s3" and float(study.image.max()) == 3.0


def test_fingerprint_changes_when_a_label_changes(nifti_folder, tmp_path):
    pd.DataFrame({"case": [f"s{k}" for k in range(8)], "grade": [0, 1] * 4}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"case": [f"s{k}" for k in range(8)], "grade": [0, 1] * 3 + [1, 1]}).to_csv(tmp_path / "b.csv", index=False)
    a = ingest(nifti_folder, labels=tmp_path / "a.csv", show_progress=False).fingerprint
    b = ingest(nifti_folder, labels=tmp_path / "b.csv", show_progress=False).fingerprint
    assert a != b
