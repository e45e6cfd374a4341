"""Editing real studies: a lesion painted in, every other voxel the input's own, on the input's grid and dtype."""

from __future__ import annotations

import json
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import assert_user_error, oblique_affine, run_cli, save_nifti, write_dicom_series
from medsynth.config import EditConfig, load_config
from medsynth.data.phantom import PhantomSpec, make_phantom, write_phantom_dataset
from medsynth.data.preprocess import PreprocessSpec, intensity_map, preprocess
from medsynth.data.readers import load_study, scan
from medsynth.data.study import Study
from medsynth.errors import MedsynthError
from medsynth.synthesis.edit import edit, target
from medsynth.synthesis.patch import Frame, distance_mm, patch_around
from medsynth.training.trainer import train

FAST = dict(steps=2, resample=2, show_progress=False, device="cpu")
LIVER, LESION = 2, 5


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit")
    data = write_phantom_dataset(root / "data", PhantomSpec(dims=3, size=16, cases=12, seed=4, prevalence=0.5),
                                 show_progress=False)
    train(load_config("tiny_3d.yaml", ["train.max_steps=20"]), data, root / "run", show_progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Three healthy phantoms larger than the model's grid (28^3 voxels at 14 mm), int16 HU, on an oblique affine,
    with label maps and a labels.csv; one of them has no liver."""
    folder = tmp_path_factory.mktemp("real") / "studies"
    folder.mkdir()
    spec = PhantomSpec(dims=3, size=28, seed=9, fov_mm=392.0)
    affine = oblique_affine(spacing=(14.0, 14.0, 14.0), origin=(-190.0, -200.0, -180.0))
    rows = []
    for k in range(3):
        study = make_phantom(spec, k, lesion=False)
        label = study.label.astype(np.uint8)
        if k == 2:
            label[label == LIVER] = 1
        save_nifti(folder / f"case{k}.nii.gz", np.round(study.image[0]).astype(np.int16), affine)
        save_nifti(folder / f"case{k}_label.nii.gz", label, affine)
        rows.append({"case_id": f"case{k}", "pathology": "normal"})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


def edited(out, k):
    image, label = nib.load(out / f"edit_{k:05d}_image.nii.gz"), nib.load(out / f"edit_{k:05d}_label.nii.gz")
    return image, np.asarray(image.dataobj), np.asarray(label.dataobj), json.loads((out / f"edit_{k:05d}.json").read_text())


def test_only_the_edit_region_changes_on_the_input_grid_affine_and_dtype(run_3d, real, tmp_path):
    out = tmp_path / "edited"
    result = edit(run_3d, real, out, inside="liver", cases=("case0", "case1"), per_study=2, margin_mm=10.0, **FAST)
    assert result.edited == 4 and result.changed_outside == 0 and not result.skipped
    for k in range(4):
        source = nib.load(real / f"case{k // 2}.nii.gz")
        before, host = np.asarray(source.dataobj), np.asarray(nib.load(real / f"case{k // 2}_label.nii.gz").dataobj)
        image, after, label, record = edited(out, k)
        assert after.dtype == before.dtype == np.int16 and after.shape == before.shape
        assert np.array_equal(image.affine, source.affine)
        lesion = label == LESION
        assert lesion.any() and np.all(host[lesion] == LIVER)               # placed inside the liver, all of it
        assert np.array_equal(label[~lesion], host[~lesion])                # the rest of the label map is the input's
        region = distance_mm(lesion, np.array([14.0, 14.0, 14.0])) <= 10.0
        assert np.array_equal(after[~region], before[~region])              # byte for byte outside the region
        assert np.any(after[lesion] != before[lesion])                      # and the lesion was painted
        assert record["kind"] == "edited-real" and record["holds_real_anatomy"] and not record["deidentified"]
        text = json.dumps(record)
        assert "case" not in text.replace("case_", "") and str(real) not in text   # no source id or path
        assert record["placement"]["host"] == "liver" and record["qc"]["changed_outside_edit_region"] == 0
        assert record["patch"]["shape"] == [16, 16, 16]                   # cut out of a 28^3 study
    table = pd.read_csv(out / "samples.csv")
    assert set(table["kind"]) == {"edited-real"} and (out / "overview.png").is_file()


def test_a_study_without_the_host_label_is_skipped_and_listed(run_3d, real, tmp_path):
    result = edit(run_3d, real, tmp_path / "e", inside="liver", cases=("case2",), **FAST)
    assert result.edited == 0 and result.skipped == [("case2", "it has no liver (label 2) in its label map")]


def test_same_seed_same_bytes_whatever_the_batch(run_3d, real, tmp_path):
    runs = {name: edit(run_3d, real, tmp_path / name, inside="liver", cases=("case0",), per_study=3, margin_mm=10.0,
                       batch_size=size, **FAST).out for name, size in (("a", 4), ("b", 4), ("c", 1))}
    for k in range(3):
        for end in ("_image.nii.gz", "_label.nii.gz", ".json"):
            assert (runs["a"] / f"edit_{k:05d}{end}").read_bytes() == (runs["b"] / f"edit_{k:05d}{end}").read_bytes()
        a, c = edited(runs["a"], k)[1].astype(int), edited(runs["c"], k)[1].astype(int)
        assert np.abs(a - c).max() <= 1                                      # kernel rounding at most, as generate
        assert edited(runs["a"], k)[3]["placement"] == edited(runs["c"], k)[3]["placement"]


def test_dicom_input_keeps_its_voxels_and_geometry(run_3d, tmp_path):
    spec = PhantomSpec(dims=3, size=24, seed=3, fov_mm=384.0)
    volume = make_phantom(spec, 0, lesion=False).image[0]
    affine = oblique_affine(spacing=(16.0, 16.0, 16.0), origin=(-150.0, -170.0, -160.0))
    write_dicom_series(tmp_path / "dicom", np.round(volume), affine)
    study = load_study(scan(tmp_path / "dicom").refs[0])
    out = edit(run_3d, tmp_path / "dicom", tmp_path / "e", margin_mm=12.0, **FAST).out
    image, after, label, record = edited(out, 0)
    assert after.dtype == np.int16 and after.shape == study.spatial_shape
    assert np.allclose(image.affine, study.affine, atol=1e-4)
    lesion = label == LESION
    region = distance_mm(lesion, np.asarray(study.spacing)) <= 12.0
    assert lesion.any() and np.array_equal(after[~region], study.image[0][~region].astype(np.int16))


def test_user_lesion_masks_are_used_as_given_and_checked(run_3d, real, tmp_path):
    masks = tmp_path / "lesions"
    masks.mkdir()
    host = np.asarray(nib.load(real / "case0_label.nii.gz").dataobj)
    mask = np.zeros_like(host)
    mask[tuple(np.argwhere(host == LIVER)[len(np.argwhere(host == LIVER)) // 2])] = LESION
    affine = nib.load(real / "case0.nii.gz").affine
    save_nifti(masks / "case0.nii.gz", mask, affine)
    out = edit(run_3d, real, tmp_path / "e", lesions=masks, cases=("case0",), **FAST).out
    assert np.array_equal(edited(out, 0)[2] == LESION, mask == LESION)
    save_nifti(masks / "case0.nii.gz", mask[:-1], affine[:])
    with pytest.raises(MedsynthError, match="on another grid than study case0"):
        edit(run_3d, real, tmp_path / "f", lesions=masks, cases=("case0",), **FAST)
    assert not (tmp_path / "f").exists()


def test_edited_sets_are_refused_by_dicom_export_and_the_audit_and_bad_input_in_one_sentence(run_3d, real, tmp_path):
    out = tmp_path / "edited"
    ok = run_cli("edit", run_3d, real, "--out", out, "--inside", "liver", "--case", "case0", "--steps", "2")
    assert ok.returncode == 0, ok.stderr
    assert_user_error(run_cli("export", out, "--out", tmp_path / "x", "--format", "dicom"), "edited-real", "DICOM")
    assert_user_error(run_cli("audit", out, "--train", real, "--holdout", real, "--out", tmp_path / "a"),
                      "edited-real", "governance")
    nifti = run_cli("export", out, "--out", tmp_path / "n", "--format", "nnunet")
    assert nifti.returncode == 0, nifti.stderr
    card = (tmp_path / "n" / "dataset_card.md").read_text()
    assert "not synthetic and not de-identified" in card and "Every image in this dataset is synthetic" not in card
    manifest = pd.read_csv(tmp_path / "n" / "manifest.csv")
    assert set(manifest.loc[manifest["role"] == "nifti image", "source"]) == {"edited-real"}
    assert not manifest["synthetic"].dropna().astype(bool).any()
    for args, fragment in ((["--inside", "spleen"], "not one of the run's mask labels"),
                           (["--margin", "-1"], "must be 0 or more"),
                           (["--where", "sex=F"], "names a column the studies do not have"),
                           (["--size-mm", "30"], "two sizes in mm")):
        assert_user_error(run_cli("edit", run_3d, real, "--out", tmp_path / "bad", *args), fragment)
        assert not (tmp_path / "bad").exists()
    assert_user_error(run_cli("edit", run_3d, real, "--out", out), "already exists")


def test_runs_that_cannot_edit_are_refused_naming_the_config_key():
    unconditioned = SimpleNamespace(codec=None, num_labels=0, class_names=[])
    with pytest.raises(MedsynthError, match="conditioning.mask: true"):
        target(unconditioned, EditConfig(lesions="masks"))
    class_only = SimpleNamespace(codec=None, num_labels=0, class_names=["lesion", "normal"])
    with pytest.raises(MedsynthError, match="--lesions"):
        target(class_only, EditConfig())
    with pytest.raises(MedsynthError, match="--inside places a lesion"):
        target(class_only, EditConfig(lesions="masks", inside="liver"))
    no_lesion = SimpleNamespace(codec=None, num_labels=3, spec=SimpleNamespace(dataset_ids=(0, 1, 2)),
                                meta={"label_names": {"1": "liver", "2": "kidney"}, "spacing": [2.0, 2.0, 2.0]})
    with pytest.raises(MedsynthError, match="--lesion-label"):
        target(no_lesion, EditConfig())


def test_a_two_d_ddpm_run_edits_too(tmp_path):
    """2D studies (positions in the study's own index axes) and the DDPM process (DDIM steps with RePaint)."""
    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(dims=2, size=16, cases=10, seed=2, prevalence=0.5),
                                 show_progress=False)
    cfg = load_config("tiny_2d.yaml", ["conditioning.mask=true", "diffusion.process=ddpm", "train.max_steps=10"])
    train(cfg, data, tmp_path / "run", show_progress=False)
    spec = PhantomSpec(dims=2, size=24, seed=5, fov_mm=480.0)
    folder = tmp_path / "real"
    folder.mkdir()
    study = make_phantom(spec, 0, lesion=False)
    affine = np.diag([20.0, 20.0, 1.0, 1.0])
    save_nifti(folder / "one.nii.gz", study.image[0][..., None].astype(np.float32), affine)
    save_nifti(folder / "one_label.nii.gz", study.label[..., None].astype(np.uint8), affine)
    out = edit(tmp_path / "run", folder, tmp_path / "e", inside="liver", margin_mm=20.0, **FAST).out
    before = np.asarray(nib.load(folder / "one.nii.gz").dataobj)
    _, after, label, record = edited(out, 0)
    lesion = label.reshape(before.shape) == LESION
    region = distance_mm(lesion[..., 0], np.array([20.0, 20.0])) <= 20.0
    assert after.dtype == np.float32 and record["sampler"].startswith("ddim")
    assert lesion.any() and np.array_equal(after.reshape(before.shape)[~region], before[~region])


def test_a_class_conditioned_run_without_masks_paints_its_lesion_class_where_the_user_masks_say(tmp_path):
    """A run that learnt whole studies with a class column (no masks): the class is painted in the user's lesion
    mask and its margin only, all of it the model's (it places the lesion anywhere there), in the view the run was
    trained in (the study centred); the label map written marks that region."""
    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(dims=2, size=16, cases=10, seed=2, prevalence=0.5),
                                 show_progress=False)
    train(load_config("tiny_2d.yaml", ["train.max_steps=10"]), data, tmp_path / "run", show_progress=False)
    study = make_phantom(PhantomSpec(dims=2, size=14, seed=5), 0, lesion=False)
    affine = np.diag([30.0, 30.0, 1.0, 1.0])
    folder, masks = tmp_path / "real", tmp_path / "lesions"
    folder.mkdir(), masks.mkdir()
    save_nifti(folder / "one.nii.gz", np.round(study.image[0][..., None]).astype(np.int16), affine)
    mask = np.zeros((14, 14, 1), np.uint8)
    mask[5:7, 4:6] = 1
    save_nifti(masks / "one.nii.gz", mask, affine)
    result = edit(tmp_path / "run", folder, tmp_path / "e", lesions=masks, margin_mm=30.0, **FAST)
    before = np.asarray(nib.load(folder / "one.nii.gz").dataobj)
    _, after, label, record = edited(result.out, 0)
    region = distance_mm(mask[..., 0] == 1, np.array([30.0, 30.0])) <= 30.0
    assert result.edited == 1 and result.changed_outside == 0
    assert np.array_equal(label.reshape(before.shape) == 1, region[..., None]) and label.max() == 1   # the region
    assert np.array_equal(after.reshape(before.shape)[~region], before[~region])    # real outside the region
    assert np.mean(after.reshape(before.shape)[region] != before[region]) > 0.8     # the model's in all of it (a
    # blend would keep the ring at the margin's edge, 8 of the region's 12 voxels, real)
    assert record["class"] == "lesion" and record["kind"] == "edited-real" and record["holds_real_anatomy"]
    assert np.allclose(record["patch"]["centre_mm"], (affine[:2, :2] @ [6.5, 6.5]).tolist())   # the study's centre


@pytest.mark.parametrize("affine", [np.diag([2.0, 3.0, 1.0, 1.0]),
                                    np.array([[0.0, 1.0, 0, 0], [-1.0, 0, 0, 13.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]),
                                    np.diag([-1.0, -1.0, 1.0, 1.0])])
def test_a_two_d_patch_is_the_view_preprocessing_gives_the_model(affine):
    """The edit's patch of a 2D study is what training saw of it (RAS in the plane), whatever its in-plane affine:
    the image of a MedMNIST-style file comes with a rotation, and a run without masks has nothing else to go by."""
    image = np.random.default_rng(0).normal(size=(1, 14, 14)).astype(np.float32)
    study = Study(image, affine, "OT", None, {}, "s", "s", "test")
    spec = PreprocessSpec(shape=(16, 16))
    frame = Frame(affine, 2)
    spacing = tuple(float(v) for v in frame.spacing)
    grid = patch_around(frame, np.ones((14, 14), bool), (16, 16), spacing)
    known = intensity_map(study, spec).to_unit(grid.take(study.image, order=1))
    assert np.allclose(known[:, 1:15, 1:15], preprocess(study, spec).image.numpy()[:, 1:15, 1:15], atol=1e-5)
