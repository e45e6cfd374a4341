"""The export gate binds a report to the bytes it judged: another set's report, a changed file, a report that lists
no files are refused in one sentence (even with --force), and nothing is written."""

from __future__ import annotations

import json

from conftest import assert_user_error, run_cli
from medsynth.runs.synthset import read_synthetic_set
from test_export import make_synthetic_set


def write_report(folder, synth, verdict="PASS", **extra):
    folder.mkdir(exist_ok=True)
    payload = {"verdict": verdict, "summary": {"verdict": verdict}, "judged_files": read_synthetic_set(synth).file_hashes(),
               **extra}
    (folder / "report.json").write_text(json.dumps(payload))
    return folder


def test_a_report_is_accepted_for_the_set_it_judged_and_the_card_says_so(tmp_path):
    synth = make_synthetic_set(tmp_path / "synth", n=2)
    report = write_report(tmp_path / "audit", synth)
    evaluation = write_report(tmp_path / "eval", synth, summary={"frechet_synthetic": 1.5})
    result = run_cli("export", synth, "--out", tmp_path / "out", "--audit", report, "--evaluation", evaluation)
    assert result.returncode == 0, result.stderr
    card = (tmp_path / "out" / "dataset_card.md").read_text()
    assert "verdict: **PASS**" in card and "judged exactly these 8 synthetic files" in card
    assert "frechet_synthetic: 1.5" in card


def test_another_sets_report_a_changed_file_or_an_unbound_report_is_refused(tmp_path):
    synth = make_synthetic_set(tmp_path / "synth", n=4)
    other = make_synthetic_set(tmp_path / "other", n=2, seed=1)
    foreign = write_report(tmp_path / "foreign", other)
    for extra in ([], ["--force"]):
        assert_user_error(run_cli("export", synth, "--out", tmp_path / "out", "--audit", foreign, *extra),
                          "judged another synthetic set", "8 files", "14 files")
    report = write_report(tmp_path / "audit", synth)
    image = synth / "syn_00002_image.nii.gz"
    image.write_bytes((synth / "syn_00000_image.nii.gz").read_bytes())          # replaced after the audit
    assert_user_error(run_cli("export", synth, "--out", tmp_path / "out", "--audit", report, "--force"),
                      "syn_00002_image.nii.gz", "changed after the audit")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text(json.dumps({"verdict": "PASS"}))
    assert_user_error(run_cli("export", synth, "--out", tmp_path / "out", "--audit", tmp_path / "old"),
                      "does not list the files it judged")
    write_report(tmp_path / "eval", other)
    assert_user_error(run_cli("export", synth, "--out", tmp_path / "out", "--evaluation", tmp_path / "eval", "--force"),
                      "--evaluation", "judged another synthetic set")
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_a_two_channel_set_keeps_every_channel_in_nifti_nnunet_and_dicom(tmp_path):
    import nibabel as nib
    import numpy as np
    import pandas as pd
    import pydicom

    synth = make_synthetic_set(tmp_path / "synth", modality="MR", n=1)
    image = nib.load(synth / "syn_00000_image.nii.gz")
    t1c, flair = np.asarray(image.dataobj, np.float32), np.asarray(image.dataobj, np.float32)[::-1].copy() + 50
    nib.save(nib.Nifti1Image(np.stack([t1c, flair], -1), image.affine), synth / "syn_00000_image.nii.gz")
    meta = json.loads((synth / "generate.json").read_text())
    (synth / "generate.json").write_text(json.dumps({**meta, "channel_names": ["T1c", "FLAIR"]}))
    result = run_cli("export", synth, "--out", tmp_path / "out", "--format", "nifti", "--format", "nnunet",
                     "--format", "dicom", "--force")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert nib.load(out / "nifti" / "images" / "syn_00000.nii.gz").shape[-1] == 2
    root = next((out / "nnunet").glob("Dataset*"))
    for c, channel in enumerate((t1c, flair)):
        assert np.allclose(nib.load(root / "imagesTr" / f"syn_00000_{c:04d}.nii.gz").get_fdata(), channel, atol=1e-3)
    assert json.loads((root / "dataset.json").read_text())["channel_names"] == {"0": "T1c", "1": "FLAIR"}
    series = {}
    for folder in ("image", "image_1"):
        files = sorted((out / "dicom" / "syn_00000" / folder).glob("*.dcm"))
        first = pydicom.dcmread(files[0])
        series[first.SeriesDescription] = (first.SeriesInstanceUID, len(files))
        volume = np.stack([pydicom.dcmread(f).pixel_array for f in files], -1)
        series[first.SeriesDescription] += (volume,)
    assert sorted(series) == ["SYNTHETIC MR (medsynth) FLAIR", "SYNTHETIC MR (medsynth) T1c"]
    first, second = (v[2] for v in series.values())
    assert first.shape[-1] == t1c.shape[-1] and not np.array_equal(first, second)
    assert len({v[0] for v in series.values()}) == 2
    manifest = pd.read_csv(out / "manifest.csv")
    assert set(manifest.loc[manifest["format"] == "dicom", "channel"].dropna()) == {"T1c", "FLAIR"}


def test_the_same_export_twice_is_byte_identical_and_names_no_local_path(tmp_path):
    synth = make_synthetic_set(tmp_path / "synth", n=2)
    for out in ("a", "b"):
        result = run_cli("export", synth, "--out", tmp_path / out, "--format", "dicom", "--format", "nifti", "--force")
        assert result.returncode == 0, result.stderr
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert any(p.name == "seg.dcm" for p in files)
    differ = [str(p) for p in files if (tmp_path / "a" / p).read_bytes() != (tmp_path / "b" / p).read_bytes()]
    assert differ == ["export.json"]             # its creation time; every exported image, SEG and index is the same
    for p in files:
        assert str(tmp_path).encode() not in (tmp_path / "a" / p).read_bytes(), p
    assert oct((tmp_path / "a").stat().st_mode & 0o777) == oct(0o777 & ~0o022)
