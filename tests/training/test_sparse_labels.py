"""A label vocabulary with gaps (a parcellation using a few of many ids) trains compact channels, and every file a
user sees keeps the dataset's own ids and names; nnU-Net gets consecutive ids, the SEG numbered segments."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from conftest import run_cli
from medsynth.config import load_config
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.exporter.dicom import read_seg
from medsynth.runs import RunFolder
from medsynth.runs.checkpoint import load_checkpoint
from medsynth.synthesis.generate import generate
from medsynth.training.trainer import train

IDS = {0: 0, 1: 3, 2: 17, 3: 40, 4: 41, 5: 200}      # phantom label -> a sparse dataset id


def sparse_dataset(root):
    data = write_phantom_dataset(root, PhantomSpec(dims=3, size=16, cases=12, seed=2), show_progress=False)
    meta = json.loads((data / "dataset.json").read_text())
    meta["labels"] = {str(IDS[int(k)]): v for k, v in meta["labels"].items()}
    (data / "dataset.json").write_text(json.dumps(meta))
    for path in (data / "labelsTr").glob("*.nii.gz"):
        image = nib.load(path)
        relabelled = np.vectorize(IDS.get)(np.asarray(image.dataobj)).astype(np.uint8)
        nib.save(nib.Nifti1Image(relabelled, image.affine, image.header), path)
    return data, meta["labels"]


def test_sparse_label_ids_train_compact_channels_and_come_back_as_the_datasets_ids(tmp_path):
    data, names = sparse_dataset(tmp_path / "data")
    train(load_config("tiny_3d.yaml", ["train.max_steps=4"]), data, tmp_path / "run", show_progress=False)
    state = load_checkpoint(RunFolder(tmp_path / "run").checkpoint)
    assert state["num_labels"] == 6 and state["label_ids"] == [0, 3, 17, 40, 41, 200]
    generate(tmp_path / "run", tmp_path / "syn", n=2, steps=1, max_attempts=1, show_progress=False)
    written = np.asarray(nib.load(tmp_path / "syn" / "syn_00000_label.nii.gz").dataobj)
    assert set(np.unique(written)) <= set(IDS.values()) and written.max() > 5          # the dataset's ids
    user = tmp_path / "masks"
    user.mkdir()
    for k, path in enumerate(sorted((data / "labelsTr").glob("*.nii.gz"))[:2]):
        nib.save(nib.load(path), user / f"m{k}.nii.gz")
    generate(tmp_path / "run", tmp_path / "mine", masks=user, steps=1, max_attempts=1, show_progress=False)
    mine = np.asarray(nib.load(tmp_path / "mine" / "syn_00000_label.nii.gz").dataobj)
    assert np.array_equal(mine, np.asarray(nib.load(user / "m0.nii.gz").dataobj))   # painted on, ids kept
    result = run_cli("export", tmp_path / "syn", "--out", tmp_path / "exp", "--format", "nnunet", "--format", "dicom",
                     "--format", "nifti", "--force")
    assert result.returncode == 0, result.stderr
    root = next((tmp_path / "exp" / "nnunet").glob("Dataset*"))
    labels = json.loads((root / "dataset.json").read_text())["labels"]
    assert sorted(labels.values()) == list(range(6)) and labels[names["200"]] == 5
    assert np.asarray(nib.load(root / "labelsTr" / "syn_00000.nii.gz").dataobj).max() <= 5
    assert np.array_equal(np.asarray(nib.load(tmp_path / "exp" / "nifti" / "labels" / "syn_00000.nii.gz").dataobj), written)
    volume, _ = read_seg(tmp_path / "exp" / "dicom" / "syn_00000" / "seg.dcm")
    assert volume.max() <= 5
    import pydicom

    segments = pydicom.dcmread(tmp_path / "exp" / "dicom" / "syn_00000" / "seg.dcm").SegmentSequence
    assert [s.SegmentNumber for s in segments] == [1, 2, 3, 4, 5]
    assert [s.SegmentLabel for s in segments] == [names[str(i)] for i in (3, 17, 40, 41, 200)]
