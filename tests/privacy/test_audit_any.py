"""The run-less audit: any generator's synthetic studies against any training and held-out data, a given split
honoured exactly, studies on other grids resampled, and bad input refused in one sentence."""

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from medsynth.data.catalog import read_catalog_folder, save_catalog_folder
from medsynth.data.ingest import ingest
from medsynth.data.phantom import (LABEL_NAMES, PhantomSpec, lesion_cases, make_phantom, phantom_anatomy,
                                   phantom_intensities)
from medsynth.data.writers import write_msd_dataset

from conftest import assert_user_error, run_cli

COPIED = ("phantom_003", "phantom_017")     # training studies copied into the synthetic folder


def _copy(src, dst, zoom: float = 1.0) -> None:
    """A training study written as a plain NIfTI file, optionally resampled onto a finer grid (same anatomy)."""
    img = nib.load(src)
    data, affine = np.asarray(img.dataobj, np.float32), img.affine.copy()
    if zoom != 1.0:
        data = ndimage.zoom(data, zoom, order=1)
        affine[:3, :3] /= zoom
    nib.save(nib.Nifti1Image(data, affine), dst)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """40 training and 24 held-out phantoms (MSD folders) and a folder of plain NIfTI from 'another generator':
    6 fresh phantoms, two exact copies of training studies and one copy on a 1.5x finer grid."""
    root = tmp_path_factory.mktemp("foreign")
    for name, cases, seed in (("train", 40, 0), ("holdout", 24, 1), ("fresh", 6, 2)):
        assert run_cli("phantom", root / name, "--cases", cases, "--size", 24, "--seed", seed).returncode == 0
    syn = root / "syn"
    syn.mkdir()
    for path in sorted((root / "fresh" / "imagesTr").glob("*.nii.gz")):
        _copy(path, syn / f"fresh_{path.name}")
    for case in COPIED:
        _copy(root / "train" / "imagesTr" / f"{case}.nii.gz", syn / f"copy_{case}.nii.gz")
    _copy(root / "train" / "imagesTr" / "phantom_029.nii.gz", syn / "fine_phantom_029.nii.gz", zoom=1.5)
    result = run_cli("audit", syn, "--train", root / "train", "--holdout", root / "holdout", "--out", root / "rep",
                     "--no-embedding", "--copies-per-kind", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    return root


def test_a_folder_of_plain_nifti_is_audited_against_training_and_holdout_folders(foreign):
    report = json.loads((foreign / "rep" / "report.json").read_text())
    pairs = pd.read_csv(foreign / "rep" / "pairs.csv", dtype={"study_id": str, "nearest_1": str})
    copies = pairs[pairs["study_id"].str.startswith("copy_")]
    assert report["verdict"] == "FAIL" and len(pairs) == 9
    assert copies["copy_beyond_doubt"].all() and sorted(copies["nearest_1"]) == list(COPIED)
    assert not pairs[pairs["study_id"].str.startswith("fresh_")]["copy_beyond_doubt"].any()
    assert "no model was given" in report["membership_not_measured"] and report["membership"] is None
    assert report["audit_grid"]["shape"] == [24, 24, 24] and report["train_studies"] == 40


def test_a_copy_on_another_grid_is_resampled_and_still_matched_to_its_source(foreign):
    pairs = pd.read_csv(foreign / "rep" / "pairs.csv", dtype={"study_id": str, "nearest_1": str})
    fine = pairs[pairs["study_id"].str.startswith("fine_")].iloc[0]
    assert fine["nearest_1"] == "phantom_029" and fine["flagged"]


def test_every_rung_is_planted_and_reported(foreign):
    rungs = json.loads((foreign / "rep" / "report.json").read_text())["detection_power"]["rungs"]
    assert {"shift3", "rotation10", "elastic3", "blur2_noise5"} <= set(rungs)
    assert rungs["blur2_noise5"]["required"] and not rungs["rotation10"]["required"]
    assert "blur2_noise5" in (foreign / "rep" / "report.html").read_text()


def test_a_given_split_is_honoured_exactly_and_one_naming_unknown_studies_is_refused(foreign, tmp_path):
    ids = sorted(p.name.split(".")[0] for p in (foreign / "train" / "imagesTr").glob("*.nii.gz"))
    split = pd.DataFrame({"study_id": ids, "split": ["holdout" if k % 3 == 0 else "train" for k in range(len(ids))]})
    split.to_csv(tmp_path / "split.csv", index=False)
    catalog = ingest(foreign / "train", split=tmp_path / "split.csv", show_progress=False).catalog
    assert dict(zip(catalog["study_id"], catalog["split"])) == dict(zip(split["study_id"], split["split"]))
    split.iloc[[0]].assign(study_id="nobody").pipe(lambda row: pd.concat([split, row])).to_csv(tmp_path / "bad.csv",
                                                                                                index=False)
    assert_user_error(run_cli("ingest", foreign / "train", "--split", tmp_path / "bad.csv"),
                      "names 1 studies the data does not hold", "nobody")


def test_split_csv_beside_a_catalog_is_the_split_every_stage_reads(foreign, tmp_path):
    catalog = ingest(foreign / "holdout", show_progress=False).catalog
    save_catalog_folder(tmp_path, catalog)
    (tmp_path / "ingest.json").write_text("{}")
    edited = catalog[["study_id", "split"]].assign(split="train")
    edited.loc[0, "split"] = "holdout"
    edited.to_csv(tmp_path / "split.csv", index=False)
    read, _ = read_catalog_folder(tmp_path)
    assert list(read["split"]) == list(edited["split"])


def test_run_less_audit_needs_a_holdout_and_refuses_a_samples_table_without_its_columns(foreign, tmp_path):
    assert_user_error(run_cli("audit", foreign / "syn", "--train", foreign / "train", "--out", tmp_path / "r1"),
                      "needs held-out real studies", "--holdout")
    odd = tmp_path / "odd"
    odd.mkdir()
    pd.DataFrame({"study_id": ["a"]}).to_csv(odd / "samples.csv", index=False)
    (odd / "generate.json").write_text(json.dumps({"modality": "CT"}))
    assert_user_error(run_cli("audit", odd, "--train", foreign / "train", "--holdout", foreign / "holdout",
                              "--out", tmp_path / "r2"), "has no image column")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def _redrawn(index: int, spec: PhantomSpec):
    """Training phantom `index`'s label map (same anatomy) with a new image drawn on it: what a generator that
    follows masks well makes from that training mask, and not a copy of the training image."""
    rng = np.random.default_rng([spec.seed, index])
    sex, age = ("M" if rng.random() < 0.5 else "F"), int(rng.integers(25, 86))
    labels = phantom_anatomy(spec, rng, index in lesion_cases(spec), sex, age)
    image = phantom_intensities(spec, np.random.default_rng([spec.seed + 99, index]), labels)
    labels[labels == 6] = 1
    study = make_phantom(spec, index, index in lesion_cases(spec))
    return replace(study, image=image[None], label=labels, study_id=f"redrawn_{index + 1:03d}")


def test_a_shared_training_mask_alone_does_not_make_a_study_distinct_and_a_copied_image_is_found(foreign, tmp_path):
    """A mask-conditioned set from another generator (MSD folder, no samples.csv): the audit finds which training
    masks its label maps came from; new images drawn on those masks stand out from every other training study (the
    mask decides the phantom's unlabelled fat layer), so the distinct channel leaves the mask's own study out; the
    study whose image is its mask source's own is still a copy beyond doubt."""
    spec = PhantomSpec(dims=3, size=24, cases=40, seed=0)
    copied = make_phantom(spec, 11, 11 in lesion_cases(spec))
    studies = [_redrawn(i, spec) for i in (0, 4, 8, 15, 23, 31)] + [replace(copied, study_id="copy_012")]
    write_msd_dataset(tmp_path / "syn", studies, "redrawn", LABEL_NAMES, "CT")
    result = run_cli("audit", tmp_path / "syn", "--train", foreign / "train", "--holdout", foreign / "holdout",
                     "--out", tmp_path / "rep", "--no-embedding", "--copies-per-kind", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    pairs = pd.read_csv(tmp_path / "rep" / "pairs.csv", dtype={"study_id": str}).set_index("study_id")
    assert report["mask_sources"]["from_training_masks"] == 7 and "label maps" in report["mask_sources"]["identified_by"]
    assert pairs.loc["copy_012", "mask_source"] == "phantom_012" and pairs.loc["copy_012", "copy_beyond_doubt"]
    redrawn = pairs[pairs.index.str.startswith("redrawn_")]
    assert list(redrawn["mask_source"]) == [f"phantom_{i + 1:03d}" for i in (0, 4, 8, 15, 23, 31)]
    holdout_gap = report["calibration"]["channels"]["distinct"]["holdout_max"]
    assert ((redrawn["pixel_1"] - redrawn["pixel_2"]) > holdout_gap).all()   # counting the mask's own study
    assert (redrawn["p_distinct"] > report["summary"]["study_rate"]).all()
