"""Export: valid DICOM (+SEG) by independent validators, NIfTI geometry, nnU-Net rules, manifest, safety."""

import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from conftest import assert_user_error, oblique_affine, run_cli
from medsynth.data.study import Study
from medsynth.data.writers import write_study_nifti
from medsynth.errors import MedsynthError
from medsynth.exporter.dicom import read_seg
from medsynth.exporter.export import export
from medsynth.runs.synthset import read_synthetic_set

sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the independent DICOM reader these tests compare against")
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def make_synthetic_set(folder, modality="CT", affine=None, n=2, shape=(12, 10, 8), seed=0):
    """A synthetic set as `medsynth generate` writes it, made directly (no model needed)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    affine = oblique_affine() if affine is None else affine
    rows = []
    for k in range(n):
        study_id = f"syn_{k:05d}"
        labels = np.zeros(shape, np.uint8)
        labels[2:9, 2:8, 1:6] = 1
        labels[4:6, 4:6, 2:4] = 2
        image = (rng.uniform(-900, 900, shape) if modality == "CT" else rng.uniform(0, 1200, shape)).astype(np.float32)
        write_study_nifti(Study(image[None], affine, modality, labels, study_id=study_id),
                          folder / f"{study_id}_image.nii.gz", folder / f"{study_id}_label.nii.gz")
        (folder / f"{study_id}.json").write_text(json.dumps({"study_id": study_id, "index": k}))
        rows.append({"study_id": study_id, "index": k, "class": "lesion", "seed": 0, "image": f"{study_id}_image.nii.gz",
                     "label": f"{study_id}_label.nii.gz", "mask_source": "", "qc_attempts": 1, "qc_passed": True})
    pd.DataFrame(rows).to_csv(folder / "samples.csv", index=False)
    meta = {"inputs": {"run": str(folder / "no-run"), "run_hash": "ab" * 32, "catalog_fingerprint": "cd" * 32},
            "config": {"steps": 2, "guidance": 1.0}, "seeds": {"generate": 0}, "modality": modality,
            "label_names": {"0": "background", "1": "liver", "2": "lesion"},
            "training_config": {"model": {"name": "unet", "channels": [8, 16]}, "diffusion": {"process": "rflow"},
                                "conditioning": {"mask": True}, "data": {"shape": list(shape)}}}
    (folder / "generate.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def ct_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    synth = make_synthetic_set(root / "synth", "CT")
    export(synth, root / "out", ["nifti", "dicom", "nnunet", "msd", "monai"], force=True, show_progress=False, workers=1)
    return root / "out"


@pytest.fixture(scope="module")
def mr_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_mr")
    synth = make_synthetic_set(root / "synth", "MR", affine=oblique_affine(angles=(0.0, 0.3, -0.2)))
    export(synth, root / "out", ["nifti", "dicom"], force=True, show_progress=False, workers=1)
    return root / "out"


def _series(root):
    return sorted((root / "dicom").glob("syn_*/image"))


def _needs(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install dicom3tools dcmtk dcm2niix)")


@pytest.mark.parametrize("which", ["ct_export", "mr_export"])
def test_every_dicom_passes_dciodvfy_and_dcmftest(which, request):
    _needs("dciodvfy")
    _needs("dcmftest")
    root = request.getfixturevalue(which)
    files = sorted(str(p) for p in (root / "dicom").rglob("*.dcm"))
    ftest = subprocess.run(["dcmftest", *files], capture_output=True, text=True)
    assert all(line.startswith("yes:") for line in ftest.stdout.splitlines()), ftest.stdout
    for path in files:
        result = subprocess.run(["dciodvfy", path], capture_output=True, text=True)
        errors = [l for l in (result.stdout + result.stderr).splitlines()
                  if l.startswith("Error") and "0x0008,0x001c" not in l]  # dicom3tools 2022 predates Synthetic Data
        assert not errors, (path, errors)
        assert "Warning - Non-identity Modality LUT" not in result.stderr


@pytest.mark.parametrize("which", ["ct_export", "mr_export"])
def test_dcm2niix_converts_without_warnings_and_matches_the_nifti(which, request, tmp_path):
    _needs("dcm2niix")
    root = request.getfixturevalue(which)
    manifest = pd.read_csv(root / "manifest.csv")
    for series in _series(root):
        out = tmp_path / series.parent.name
        out.mkdir()
        log = subprocess.run(["dcm2niix", "-z", "y", "-f", "out", "-o", str(out), str(series)], capture_output=True, text=True)
        bad = [l for l in (log.stdout + log.stderr).splitlines()
               if ("warning" in l.lower() or "error" in l.lower()) and "Unable to determine manufacturer" not in l]
        assert not bad, bad
        ours = nib.as_closest_canonical(nib.load(root / "nifti" / "images" / f"{series.parent.name}.nii.gz"))
        theirs = nib.as_closest_canonical(nib.load(out / "out.nii.gz"))
        assert np.abs(ours.affine - theirs.affine).max() < 0.01
        rows = manifest[(manifest["study_id"] == series.parent.name) & (manifest["role"] == "dicom image")]
        slope, intercept = rows["intensity_slope"].iloc[0], rows["intensity_intercept"].iloc[0]
        if slope == 1:  # CT: int16 HU stored as is
            np.testing.assert_array_equal(theirs.get_fdata(), ours.get_fdata())
        else:  # MR: uint16 storage; back in physical units every voxel is within half a quantisation step
            assert np.abs(theirs.get_fdata() * slope + intercept - ours.get_fdata()).max() <= 0.51 * slope  # half a step, plus float32 arithmetic


@pytest.mark.parametrize("which", ["ct_export", "mr_export"])
def test_simpleitk_reads_the_same_oblique_geometry(which, request):
    root = request.getfixturevalue(which)
    for series in _series(root):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
        dicom = reader.Execute()
        nifti = sitk.ReadImage(str(root / "nifti" / "images" / f"{series.parent.name}.nii.gz"))
        np.testing.assert_allclose(dicom.GetOrigin(), nifti.GetOrigin(), atol=0.01)
        np.testing.assert_allclose(dicom.GetSpacing(), nifti.GetSpacing(), atol=0.01)
        np.testing.assert_allclose(dicom.GetDirection(), nifti.GetDirection(), atol=1e-4)
        assert abs(np.array(dicom.GetDirection()).reshape(3, 3) - np.eye(3)).max() > 0.1  # it really is oblique


def test_seg_round_trips_voxel_exactly_in_world_space(ct_export):
    for series in _series(ct_export):
        array, affine_lps = read_seg(series.parent / "seg.dcm")
        label = nib.load(ct_export / "nifti" / "labels" / f"{series.parent.name}.nii.gz")
        world_seg = (LPS @ affine_lps)[:3] @ np.c_[np.argwhere(array > 0), np.ones((array > 0).sum())].T
        world_nii = label.affine[:3] @ np.c_[np.argwhere(label.get_fdata() > 0), np.ones((label.get_fdata() > 0).sum())].T
        key = lambda p: np.lexsort(np.round(p, 2))  # noqa: E731
        np.testing.assert_allclose(world_seg[:, key(world_seg)], world_nii[:, key(world_nii)], atol=1e-3)
        assert np.array_equal(np.sort(array[array > 0]), np.sort(label.get_fdata()[label.get_fdata() > 0]).astype(int))


def test_dicom_marks_data_synthetic_and_holds_no_vendor_or_real_identity(ct_export):
    image = pydicom.dcmread(next((ct_export / "dicom").rglob("IM00001.dcm")))
    seg = pydicom.dcmread(next((ct_export / "dicom").rglob("seg.dcm")))
    for ds in (image, seg):
        assert ds.SyntheticData == "YES" and ds.PatientName.family_name == "SYNTH"
    assert image.PatientIdentityRemoved == "YES" and image.DeidentificationMethod.startswith("SYNTHETIC")
    assert image.ContributingEquipmentSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109100"
    assert image.Manufacturer[:2].upper() not in {"SI", "GE", "HI", "ME", "PH", "TO", "CA", "CP", "UI", "BR", "MR", "HY"}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == image.SeriesInstanceUID
    assert image.ImageType[0] == "DERIVED"


def test_uids_are_reproducible(tmp_path):
    synth = make_synthetic_set(tmp_path / "synth", n=1)
    for out in ("a", "b"):
        export(synth, tmp_path / out, ["dicom"], force=True, show_progress=False, workers=1)
    a, b = (pydicom.dcmread(tmp_path / o / "dicom" / "syn_00000" / "image" / "IM00002.dcm") for o in ("a", "b"))
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.SOPInstanceUID.startswith("2.25.") and len(a.SOPInstanceUID) <= 64


def test_nnunet_layout_follows_nnunets_dataset_rules(ct_export):
    root = next((ct_export / "nnunet").glob("Dataset501_*"))
    meta = json.loads((root / "dataset.json").read_text())
    assert {"channel_names", "labels", "numTraining", "file_ending"} <= set(meta) and meta["channel_names"] == {"0": "CT"}
    assert sorted(meta["labels"].values()) == list(range(len(meta["labels"]))) and meta["labels"]["background"] == 0
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (root / "imagesTr").glob("*_0000.nii.gz"))
    assert len(cases) == meta["numTraining"] == 2 and len(list((root / "imagesTr").iterdir())) == len(cases)
    for case in cases:
        image, label = nib.load(root / "imagesTr" / f"{case}_0000.nii.gz"), nib.load(root / "labelsTr" / f"{case}.nii.gz")
        assert image.shape == label.shape and np.allclose(image.affine, label.affine, atol=1e-5)
        values = np.asarray(label.dataobj)
        assert set(np.unique(values)) <= set(meta["labels"].values()) and label.get_data_dtype() == np.uint8
        assert np.all(np.isfinite(image.get_fdata()))
        assert int(image.header["sform_code"]) == 1 and image.header.get_xyzt_units()[0] == "mm"


def test_msd_and_monai_layouts_load_with_monai(ct_export):
    from monai.data import load_decathlon_datalist

    msd = next((ct_export / "msd").glob("Task501_*"))
    assert (msd / "imagesTs").is_dir() and len(load_decathlon_datalist(str(msd / "dataset.json"))) == 2
    items = load_decathlon_datalist(str(ct_export / "monai" / "datalist.json"))
    assert all(item["source"] == "synthetic" and item["class"] == "lesion" for item in items)
    assert nib.load(items[0]["label"]).shape == nib.load(items[0]["image"]).shape


def test_manifest_hashes_match_the_files_and_card_says_not_audited(ct_export):
    from medsynth.provenance import sha256_file

    manifest = pd.read_csv(ct_export / "manifest.csv")
    files = {str(p.relative_to(ct_export)) for p in ct_export.rglob("*") if p.is_file()} - {"manifest.csv", "dataset_card.md", "export.json"}
    assert set(manifest["path"]) == files
    assert all(sha256_file(ct_export / p) == h for p, h in zip(manifest["path"], manifest["sha256"]))
    assert (manifest["audit_verdict"].dropna() == "NOT AUDITED").all()
    assert "NOT AUDITED" in (ct_export / "dataset_card.md").read_text()


def test_export_needs_a_pass_audit_unless_forced(tmp_path):
    synth = make_synthetic_set(tmp_path / "synth", n=1)
    with pytest.raises(MedsynthError, match="no privacy audit"):
        export(synth, tmp_path / "out", ["nifti"], show_progress=False)
    (tmp_path / "audit").mkdir()
    judged = read_synthetic_set(synth).file_hashes()        # a report vouches for the files it judged
    (tmp_path / "audit" / "report.json").write_text(json.dumps({"verdict": "FAIL", "judged_files": judged}))
    with pytest.raises(MedsynthError, match="verdict is FAIL"):
        export(synth, tmp_path / "out", ["nifti"], audit=tmp_path / "audit", show_progress=False)
    (tmp_path / "audit" / "report.json").write_text(json.dumps({"verdict": "PASS", "summary": {"recall": 1.0},
                                                                "judged_files": judged}))
    export(synth, tmp_path / "out", ["nifti"], audit=tmp_path / "audit", show_progress=False)
    assert "verdict: **PASS**" in (tmp_path / "out" / "dataset_card.md").read_text()
    assert not (tmp_path / "out2").exists()


def test_failed_export_leaves_nothing_and_existing_output_is_kept(tmp_path):
    synth = make_synthetic_set(tmp_path / "synth", n=2)
    (synth / "syn_00001_image.nii.gz").write_bytes(b"\x1f\x8b broken")
    assert_user_error(run_cli("export", synth, "--out", tmp_path / "out", "--format", "nifti", "--format", "dicom",
                              "--force"), "syn_00001_image.nii.gz")
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "mine.txt").write_text("x")
    assert_user_error(run_cli("export", synth, "--out", keep, "--force"), "already exists")
    assert (keep / "mine.txt").exists()


def test_with_real_merges_clearly_named_real_cases(tmp_path):
    from medsynth.data.phantom import PhantomSpec, write_phantom_dataset

    real = write_phantom_dataset(tmp_path / "real", PhantomSpec(size=12, cases=2), show_progress=False)
    synth = make_synthetic_set(tmp_path / "synth", n=1)
    export(synth, tmp_path / "out", ["nnunet", "monai"], force=True, with_real=real, show_progress=False)
    root = next((tmp_path / "out" / "nnunet").glob("Dataset*"))
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == ["real_phantom_001.nii.gz", "real_phantom_002.nii.gz",
                                                                      "syn_00000.nii.gz"]
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert set(manifest.loc[manifest["study_id"].str.startswith("real_"), "source"]) == {"real"}


def test_no_training_study_identifier_reaches_any_exported_file(tmp_path):
    """Generate from a real run (mask bank from training studies), export everything, scan every byte."""
    from medsynth.config import load_config
    from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
    from medsynth.synthesis.generate import generate
    from medsynth.training.trainer import train

    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(size=16, cases=8, seed=9), show_progress=False)
    train(load_config("tiny_3d.yaml", ["train.max_steps=2"]), data, tmp_path / "run", show_progress=False)
    generate(tmp_path / "run", tmp_path / "synth", n=2, steps=1, max_attempts=1, show_progress=False)
    assert "phantom_0" in (tmp_path / "synth" / "syn_00000.json").read_text()  # the synthetic set itself records it
    export(tmp_path / "synth", tmp_path / "out", ["nifti", "dicom", "nnunet", "msd", "monai"], force=True,
           show_progress=False, workers=1)
    training_strings = [f"phantom_{k:03d}" for k in range(1, 9)] + [str(data)]
    for path in (p for p in (tmp_path / "out").rglob("*") if p.is_file()):
        content = path.read_bytes()
        if path.suffix == ".gz":
            import gzip

            content = gzip.decompress(content)
        for text in training_strings:
            assert text.encode() not in content, (path, text)


def test_fast_series_writer_writes_the_bytes_pydicom_writes(tmp_path):
    """The shared-header writer must produce exactly what pydicom's own save_as produces for each slice."""
    from pydicom.dataset import FileMetaDataset

    from medsynth.exporter.dicom import VARYING, write_series

    volume = np.random.default_rng(3).uniform(-1000, 2000, (9, 7, 4)).astype(np.float32)
    keys = {k: f"2.25.{n}" for n, k in enumerate(("study", "series", "frame", "seg_series"), 1)}
    headers, _ = write_series(tmp_path / "fast", volume, oblique_affine(), "CT", keys, 1, "0.1.0")
    for k, header in enumerate(headers):
        reference = pydicom.dcmread(tmp_path / "fast" / f"IM{k + 1:05d}.dcm")
        np.testing.assert_array_equal(reference.pixel_array.T, np.round(volume[:, :, k]))
        assert [str(header[n].value) for n in VARYING] == [str(reference[n].value) for n in VARYING]
        ds = pydicom.Dataset()
        ds.update(reference)
        ds.file_meta = FileMetaDataset(reference.file_meta)
        ds.save_as(tmp_path / "ref.dcm", enforce_file_format=True)
        fast = (tmp_path / "fast" / f"IM{k + 1:05d}.dcm").read_bytes()
        assert fast == (tmp_path / "ref.dcm").read_bytes()
    assert headers[0].SOPInstanceUID != headers[1].SOPInstanceUID and headers[0].PatientID == headers[1].PatientID


def test_exported_dicom_with_seg_ingests_back_to_the_same_studies(ct_export):
    """Closed loop: medsynth's DICOM (+SEG) export, read by medsynth's DICOM reader, equals the NIfTI export."""
    from medsynth.data.readers import load_study, scan

    found = scan(ct_export / "dicom")
    assert found.label_names == {0: "background", 1: "liver", 2: "lesion"}
    for ref in found.refs:
        study = load_study(ref, found.label_names)
        case = ref.study_id.split("_image")[0]
        image = nib.load(ct_export / "nifti" / "images" / f"{case}.nii.gz")
        label = nib.load(ct_export / "nifti" / "labels" / f"{case}.nii.gz")
        np.testing.assert_allclose(study.affine, image.affine, atol=1e-3)
        np.testing.assert_array_equal(study.image[0], image.get_fdata())
        np.testing.assert_array_equal(study.label, np.asarray(label.dataobj))
