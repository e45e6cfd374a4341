"""The command line as users meet it: outputs, provenance, and one clear sentence for every bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import assert_user_error, run_cli, save_nifti, shared_data, write_dicom_series


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ph"
    result = run_cli("phantom", out, "--cases", 6, "--size", 16, "--seed", 3)
    assert result.returncode == 0, result.stderr
    return out


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_phantom_then_ingest_writes_catalog_split_and_provenance(phantoms, tmp_path):
    result = run_cli("ingest", phantoms, "--out", tmp_path / "cat", "--seed", 1)
    assert result.returncode == 0, result.stderr
    assert "6 studies" in result.stdout and "lesion" in result.stdout
    catalog = pd.read_csv(tmp_path / "cat" / "catalog.csv")
    split = pd.read_csv(tmp_path / "cat" / "split.csv")
    assert list(split.columns) == ["study_id", "split"] and split["study_id"].tolist() == catalog["study_id"].tolist()
    record = json.loads((tmp_path / "cat" / "ingest.json").read_text())
    assert record["config"]["seed"] == 1 and record["versions"]["monai"] and len(record["inputs"]["catalog_fingerprint"]) == 64
    assert record["label_names"]["5"] == "lesion"
    made = json.loads((phantoms / "medsynth.json").read_text())
    assert made["config"]["seed"] == 3 and made["seeds"] == {"phantom": 3}


def test_existing_output_is_not_overwritten_unless_asked(phantoms, tmp_path):
    out = tmp_path / "cat"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_user_error(run_cli("ingest", phantoms, "--out", out), "already exists", "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    assert run_cli("ingest", phantoms, "--out", out, "--overwrite").returncode == 0
    assert not (out / "keep.txt").exists() and (out / "catalog.csv").exists()


def test_missing_path(tmp_path):
    assert_user_error(run_cli("ingest", tmp_path / "nowhere"), "does not exist")


def test_corrupt_case_stops_ingest_and_leaves_nothing(phantoms, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for case in ("a", "b", "c"):
        save_nifti(data / f"{case}.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    (data / "b.nii.gz").write_bytes(b"\x1f\x8b garbage")
    assert_user_error(run_cli("ingest", data, "--out", tmp_path / "cat"), "b.nii.gz", "not a readable NIfTI")
    assert not (tmp_path / "cat").exists() and not _leftovers(tmp_path)


def test_image_and_label_on_different_grids(tmp_path):
    save_nifti(tmp_path / "x.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    save_nifti(tmp_path / "x_label.nii.gz", np.zeros((4, 4, 5), np.uint8), np.eye(4))
    assert_user_error(run_cli("ingest", tmp_path), "label shape")


def test_unexpected_label_values(phantoms, tmp_path):
    data = tmp_path / "ph"
    run_cli("phantom", data, "--cases", 2, "--size", 12)
    meta = json.loads((data / "dataset.json").read_text())
    del meta["labels"]["5"], meta["labels"]["4"]
    (data / "dataset.json").write_text(json.dumps(meta))
    assert_user_error(run_cli("ingest", data), "does not name")


def test_dataset_json_disagreeing_with_files(phantoms, tmp_path):
    data = tmp_path / "ph"
    run_cli("phantom", data, "--cases", 2, "--size", 12)
    meta = json.loads((data / "dataset.json").read_text())
    meta["numTraining"] = 3
    (data / "dataset.json").write_text(json.dumps(meta))
    assert_user_error(run_cli("ingest", data), "numTraining=3")


def test_labels_csv_with_unknown_cases(phantoms, tmp_path):
    pd.DataFrame({"case_id": ["phantom_001", "ghost_9"], "grade": [1, 2]}).to_csv(tmp_path / "l.csv", index=False)
    assert_user_error(run_cli("ingest", phantoms, "--labels", tmp_path / "l.csv"), "ghost_9")


def test_dicom_folder_with_missing_slice(tmp_path, ct_volume):
    paths = write_dicom_series(tmp_path / "dcm", ct_volume, np.eye(4))
    paths[2].unlink()
    assert_user_error(run_cli("ingest", tmp_path / "dcm"), "missing slices")


def test_dicom_folder_ingests_with_modality_and_subject(tmp_path, ct_volume):
    write_dicom_series(tmp_path / "dcm" / "series_a", ct_volume, np.eye(4), patient_id="PAT7")
    result = run_cli("ingest", tmp_path / "dcm", "--out", tmp_path / "cat")
    assert result.returncode == 0, result.stderr
    row = pd.read_csv(tmp_path / "cat" / "catalog.csv").iloc[0]
    assert (row["study_id"], row["subject_id"], row["modality"], row["shape"]) == ("series_a", "PAT7", "CT", "12x10x6")


def test_bad_phantom_option(tmp_path):
    assert_user_error(run_cli("phantom", tmp_path / "p", "--dims", 4), "--dims")
    assert not (tmp_path / "p").exists()


def test_help_lists_every_command_and_each_command_explains_itself():
    commands = ("phantom", "ingest", "train", "generate", "audit", "evaluate", "export", "demo")
    result = run_cli("--help")
    assert result.returncode == 0 and all(c in result.stdout for c in commands)
    for command in commands:
        page = run_cli(command, "--help")
        assert page.returncode == 0 and "--overwrite" in page.stdout and "Usage" in page.stdout


@pytest.mark.shared_data
def test_hippocampus_lists_231_studies_with_labels_and_spacings():
    result = run_cli("ingest", shared_data("hippocampus"), "--list")
    assert result.returncode == 0, result.stderr
    assert "231 studies" in result.stdout and "MR" in result.stdout
    assert "Anterior" in result.stdout and "Posterior" in result.stdout
    assert result.stdout.count("0,1,2") == 231 and "1x1x1 (231)" in result.stdout


@pytest.mark.shared_data
def test_breastmnist_npz_ingests_with_its_rare_class(tmp_path):
    result = run_cli("ingest", shared_data("breastmnist", "breastmnist.npz"), "--out", tmp_path / "cat")
    assert result.returncode == 0, result.stderr
    catalog = pd.read_csv(tmp_path / "cat" / "catalog.csv")
    assert len(catalog) == 780 and (catalog.query("source_split == 'train'")["class"] == 0).sum() == 147
    assert (catalog["split"] == "train").sum() == 546  # the official MedMNIST split is kept


def test_demo_quick_runs_every_stage(quick_demo):
    import hashlib
    import json

    import nibabel as nib
    import pydicom

    demo, result = quick_demo
    assert result.returncode == 0, result.stderr
    assert (demo / "data" / "dataset.json").exists()
    assert len(pd.read_csv(demo / "catalog" / "catalog.csv")) == 64
    assert (demo / "run" / "checkpoints" / "last.pt").exists()
    assert (demo / "run" / "samples" / "final.png").exists()
    samples = pd.read_csv(demo / "synthetic" / "samples.csv")
    assert samples["class"].value_counts().to_dict() == {"lesion": 4, "normal": 4}
    verdict = json.loads((demo / "audit" / "report.json").read_text())["verdict"]
    assert verdict in ("PASS", "FAIL", "INCONCLUSIVE") and (demo / "audit" / "report_redacted.html").exists()
    manifest = pd.read_csv(demo / "export" / "manifest.csv")
    assert set(manifest["audit_verdict"].dropna()) == {verdict}
    for _, row in manifest.iterrows():
        path = demo / "export" / row["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"], row["path"]
    for path in manifest.loc[manifest["path"].str.endswith(".nii.gz"), "path"]:
        assert nib.load(demo / "export" / path).get_fdata().size > 0
    segs = list((demo / "export" / "dicom").glob("syn_*/seg.dcm"))
    assert len(segs) == 8 and all(pydicom.dcmread(p).Modality == "SEG" for p in segs)
    evaluation = json.loads((demo / "evaluation" / "report.json").read_text())
    assert set(evaluation["conditioning"]) == {"class", "mask"} and evaluation["studies"]["synthetic"] == 8
    index = (demo / "index.html").read_text()
    assert "data:image/png;base64," in index and verdict in index
    for link in ("audit/report.html", "evaluation/report.html", "export/dataset_card.md"):
        assert f'href="{link}"' in index and (demo / link).is_file()


def test_the_stages_are_functions_on_the_package():
    import medsynth

    for name in ("ingest", "train", "generate", "audit", "evaluate", "export", "run_demo"):
        assert callable(getattr(medsynth, name)), name
    assert medsynth.AuditSettings().alpha == 0.05 and medsynth.EvaluateSettings().seeds == 3


def test_demo_resume_needs_an_interrupted_demo(tmp_path):
    assert_user_error(run_cli("demo", "--quick", "--resume", "--out", tmp_path / "none"), "no interrupted demo")


def test_bad_options_get_the_same_one_sentence_as_every_other_error(tmp_path):
    for args, fragment in ((["phantom", tmp_path / "p", "--cases", "abc"], "Invalid value for '--cases'"),
                           (["generate"], "Missing argument"), (["no-such-command"], "No such command"),
                           (["export", tmp_path / "s", "--out", tmp_path / "o", "--colour", "red"], "--colour")):
        assert_user_error(run_cli(*args), fragment, "--help")
    assert not (tmp_path / "p").exists()
