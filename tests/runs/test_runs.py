"""The run room: checkpoints save and load as data, the layout names every file, a foreign folder is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medsynth.errors import MedsynthError
from medsynth.runs import RunFolder, SetFolder
from medsynth.runs.checkpoint import load_checkpoint, save_checkpoint
from medsynth.runs.synthset import read_synthetic_set


def test_a_checkpoint_saves_and_loads_to_the_same_data_and_a_broken_one_is_refused(tmp_path):
    path = RunFolder(tmp_path / "run").checkpoint
    payload = {"step": 3, "config": {"train": {"lr": 1e-3}}, "model": {"w": torch.arange(6.0).reshape(2, 3)}}
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["config"] == payload["config"]
    assert torch.equal(loaded["model"]["w"], payload["model"]["w"])
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]          # no temporary file left behind
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MedsynthError, match="not a readable medsynth checkpoint"):
        load_checkpoint(path)
    with pytest.raises(MedsynthError, match="train a model first"):
        load_checkpoint(tmp_path / "none.pt")


def test_the_layout_names_the_files_the_readme_documents(tmp_path):
    run, synth = RunFolder(Path("run")), SetFolder(Path("synth"))
    assert [run.relative(p) for p in (run.checkpoint, run.autoencoder, run.controlnet)] == [
        "checkpoints/last.pt", "checkpoints/autoencoder.pt", "checkpoints/controlnet.pt"]
    assert [p.name for p in (run.config, run.catalog, run.split, run.record, run.mask_bank, run.metrics(),
                             run.metrics("controlnet"))] == [
        "config.yaml", "catalog.csv", "split.csv", "run.json", "mask_bank.npz", "metrics.csv", "controlnet_metrics.csv"]
    assert (synth.table.name, synth.record.name, synth.image_name("syn_00001"), synth.study_record("a").name) == (
        "samples.csv", "generate.json", "syn_00001_image.nii.gz", "a.json")


def test_a_folder_that_is_not_a_synthetic_set_is_refused_in_one_sentence(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(MedsynthError, match="not a medsynth synthetic set"):
        read_synthetic_set(tmp_path / "images")
