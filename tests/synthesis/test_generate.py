"""Generation: reproducible per study, counts honoured, masks paired, physical units, QC re-sampling, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import assert_user_error, run_cli, save_nifti
from medsynth.config import load_config
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.errors import MedsynthError
from medsynth.synthesis import generate as generate_module
from medsynth.synthesis.generate import generate
from medsynth.training.trainer import train

FAST = dict(steps=2, max_attempts=1, show_progress=False)


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    data = write_phantom_dataset(root / "data", PhantomSpec(dims=3, size=16, cases=12, seed=4), show_progress=False)
    train(load_config("tiny_3d.yaml", ["train.max_steps=30"]), data, root / "run", show_progress=False)
    return root / "run"


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_same_study(a, b, k):
    """Study k drawn identically (noise, mask, provenance); pixels equal up to kernel rounding of about 1e-6."""
    for end in ("_label.nii.gz", ".json"):
        assert (a / f"syn_{k:05d}{end}").read_bytes() == (b / f"syn_{k:05d}{end}").read_bytes()
    x, y = (np.asarray(nib.load(d / f"syn_{k:05d}_image.nii.gz").dataobj).astype(int) for d in (a, b))
    assert np.abs(x - y).max() <= 1 and (x != y).mean() < 0.001  # at most a 1 HU rounding flip in rare voxels


def test_same_seed_gives_identical_files(run_3d, tmp_path):
    generate(run_3d, tmp_path / "a", n=3, seed=5, **FAST)
    generate(run_3d, tmp_path / "b", n=3, seed=5, **FAST)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    generate(run_3d, tmp_path / "c", n=3, seed=6, **FAST)
    assert _files(tmp_path / "a")["syn_00000_image.nii.gz"] != _files(tmp_path / "c")["syn_00000_image.nii.gz"]


def test_batch_size_does_not_change_study_k(run_3d, tmp_path):
    """Same noise, mask and provenance for study k; pixels equal up to convolution-kernel rounding (about 1e-6)."""
    generate(run_3d, tmp_path / "one", n=4, batch_size=1, **FAST)
    generate(run_3d, tmp_path / "four", n=4, batch_size=4, **FAST)
    for k in range(4):
        assert_same_study(tmp_path / "one", tmp_path / "four", k)
    other = np.asarray(nib.load(tmp_path / "one" / "syn_00001_image.nii.gz").dataobj).astype(int)
    assert np.abs(other - np.asarray(nib.load(tmp_path / "one" / "syn_00000_image.nii.gz").dataobj)).mean() > 5


def test_class_counts_are_honoured(run_3d, tmp_path):
    generate(run_3d, tmp_path / "s", classes=["lesion=3", "normal=2"], **FAST)
    table = pd.read_csv(tmp_path / "s" / "samples.csv")
    assert table["class"].value_counts().to_dict() == {"lesion": 3, "normal": 2}
    assert json.loads((tmp_path / "s" / "syn_00000.json").read_text())["class"] == "lesion"


def test_default_counts_follow_training_proportions(run_3d, tmp_path):
    generate(run_3d, tmp_path / "s", n=5, **FAST)
    counts = pd.read_csv(tmp_path / "s" / "samples.csv")["class"].value_counts()
    assert counts.sum() == 5 and counts["normal"] > counts.get("lesion", 0)


def test_mask_conditioned_studies_come_with_their_masks_in_physical_units(run_3d, tmp_path):
    generate(run_3d, tmp_path / "s", classes=["lesion=2"], **FAST)
    image = nib.load(tmp_path / "s" / "syn_00000_image.nii.gz")
    label = nib.load(tmp_path / "s" / "syn_00000_label.nii.gz")
    assert image.shape == label.shape == (16, 16, 16)
    np.testing.assert_allclose(image.affine, label.affine)
    np.testing.assert_allclose(np.abs(np.diag(image.affine))[:3], 20.0)  # 320 mm phantoms on a 16^3 grid
    assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 1
    pixels = np.asarray(image.dataobj)
    assert pixels.dtype == np.int16 and pixels.min() >= -1000 and pixels.max() <= 1000  # HU within the CT window
    values = set(np.unique(np.asarray(label.dataobj)).tolist())
    assert values <= set(range(6)) and 5 in values  # the lesion class is painted onto a mask with a lesion
    source = json.loads((tmp_path / "s" / "syn_00000.json").read_text())["mask_source"]
    assert source["kind"] == "mask bank" and source["study_id"].startswith("phantom_")


def test_failed_qc_sample_is_replaced(run_3d, tmp_path, monkeypatch):
    generate(run_3d, tmp_path / "plain", n=2, **FAST)
    calls = {"n": 0}

    def fail_first(unit, labels, stats):
        calls["n"] += 1
        return ["forced failure"] if calls["n"] == 1 else []

    monkeypatch.setattr(generate_module, "quality_check", fail_first)
    generate(run_3d, tmp_path / "qc", n=2, steps=2, max_attempts=3, show_progress=False)
    table = pd.read_csv(tmp_path / "qc" / "samples.csv")
    assert table["qc_attempts"].tolist() == [2, 1] and table["qc_passed"].all()
    plain, redrawn = _files(tmp_path / "plain"), _files(tmp_path / "qc")
    assert plain["syn_00000_image.nii.gz"] != redrawn["syn_00000_image.nii.gz"]
    assert plain["syn_00001_image.nii.gz"] == redrawn["syn_00001_image.nii.gz"]


def test_shards_cover_every_study_once(run_3d, tmp_path):
    generate(run_3d, tmp_path / "all", n=5, **FAST)
    generate(run_3d, tmp_path / "s0", n=5, shard="0/2", **FAST)
    generate(run_3d, tmp_path / "s1", n=5, shard="1/2", **FAST)
    parts = [pd.read_csv(tmp_path / s / "samples.csv")["index"].tolist() for s in ("s0", "s1")]
    assert sorted(parts[0] + parts[1]) == list(range(5)) and not set(parts[0]) & set(parts[1])
    for shard, indices in zip(("s0", "s1"), parts):
        for k in indices:
            assert_same_study(tmp_path / "all", tmp_path / shard, k)


def test_user_masks_are_used_and_validated(run_3d, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    label = np.zeros((16, 16, 16), np.uint8)
    label[4:12, 4:12, 4:12] = 1
    label[6:9, 6:9, 6:9] = 2
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    save_nifti(masks / "m1_label.nii.gz", label, affine)
    generate(run_3d, tmp_path / "s", masks=masks, classes=["normal=1"], **FAST)
    out = nib.load(tmp_path / "s" / "syn_00000_label.nii.gz")
    np.testing.assert_array_equal(np.asarray(out.dataobj), label)
    np.testing.assert_allclose(out.affine, affine)
    save_nifti(masks / "m2_label.nii.gz", np.full((16, 16, 16), 9, np.uint8), affine)
    with pytest.raises(MedsynthError, match=r"values \[9\]"):
        generate(run_3d, tmp_path / "bad", masks=masks, **FAST)
    (masks / "m2_label.nii.gz").unlink()
    save_nifti(masks / "m3_label.nii.gz", np.zeros((8, 8, 8), np.uint8), affine)
    with pytest.raises(MedsynthError, match="model's grid"):
        generate(run_3d, tmp_path / "bad", masks=masks, **FAST)
    assert not (tmp_path / "bad").exists()


def test_bad_generation_input_writes_nothing(run_3d, tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "x").write_text("keep")
    cases = [
        (dict(classes=["tumour=3"]), "never seen in training"),
        (dict(classes=["lesion=0"]), "positive integer"),
        (dict(classes=["lesion=two"]), "positive integer"),
        (dict(n=0), "positive integer"),
    ]
    for n, (kwargs, message) in enumerate(cases):
        with pytest.raises(MedsynthError, match=message):
            generate(run_3d, tmp_path / f"out{n}", **kwargs, **FAST)
        assert not (tmp_path / f"out{n}").exists()
    assert_user_error(run_cli("generate", run_3d, "--out", existing, "--n", 1), "already exists")
    assert (existing / "x").read_text() == "keep"


def test_unfinished_run_is_refused(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(dims=2, size=16, cases=8), show_progress=False)
    train(load_config("tiny_2d.yaml", ["train.max_steps=10"]), data, tmp_path / "run", show_progress=False, stop_at=3)
    with pytest.raises(MedsynthError, match="not finished"):
        generate(tmp_path / "run", tmp_path / "out", n=1, **FAST)
    assert_user_error(run_cli("generate", tmp_path / "nowhere", "--out", tmp_path / "o2"), "does not exist")


def test_two_d_class_run_generates_through_the_cli(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(dims=2, size=16, cases=8), show_progress=False)
    train(load_config("tiny_2d.yaml", ["train.max_steps=5"]), data, tmp_path / "run", show_progress=False)
    result = run_cli("generate", tmp_path / "run", "--out", tmp_path / "s", "--class", "lesion=2", "--steps", 2,
                     "--qc-attempts", 1, "--guidance-interval", "0.3,0.9")
    assert result.returncode == 0, result.stderr
    assert "generated 2 studies" in result.stdout and (tmp_path / "s" / "overview.png").exists()
    assert json.loads((tmp_path / "s" / "generate.json").read_text())["config"]["guidance_interval"] == [0.3, 0.9]
    assert nib.load(tmp_path / "s" / "syn_00001_image.nii.gz").shape == (16, 16)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_generation_leaves_no_partial_folder_and_says_so(run_3d, tmp_path, sig):
    out = tmp_path / "syn"
    process = subprocess.Popen([sys.executable, "-m", "medsynth", "generate", str(run_3d), "--out", str(out),
                                "--n", "400", "--steps", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        partial = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
        if partial and list(partial[0].glob("*_image.nii.gz")):
            break
        time.sleep(0.05)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    said = [line for line in stderr.strip().splitlines() if not line.startswith("generating:")]   # progress may come first
    assert "interrupted before" in stderr and "nothing was written there" in stderr and len(said) == 1
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_the_overview_shows_every_class_asked_for_not_only_the_first():
    from medsynth.viz import spread_by_class
    picked = spread_by_class(["lesion"] * 200 + ["normal"] * 200)        # a 400-study set of two classes, in order
    assert len(picked) == 16 and sum(k >= 200 for k in picked) == 8
    assert spread_by_class([None] * 30) == list(range(16))               # an unconditioned set: the first 16
