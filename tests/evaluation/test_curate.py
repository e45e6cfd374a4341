"""Curation (`medsynth curate`, `generate --curate`): a near-copy of a training study is never kept, the rule and
every drop are recorded, the curated set is a set the other stages read."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import assert_user_error, run_cli
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.runs.loaded import load_run
from medsynth.runs.real import load_real


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny class-conditioned 2D run with 24 held-out studies and a 12-study synthetic set."""
    root = tmp_path_factory.mktemp("curate")
    write_phantom_dataset(root / "data", PhantomSpec(dims=2, size=16, cases=80, seed=21), show_progress=False)
    for args in (["ingest", root / "data", "--out", root / "cat", "--holdout", "0.3"],
                 ["train", root / "cat", "--config", "tiny_2d.yaml", "--out", root / "run", "--max-steps", "60"],
                 ["generate", root / "run", "--out", root / "syn", "--n", "12"]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
    return root


def plant_copies(root, names: list[str]) -> list[str]:
    """Overwrite the named synthetic studies with training studies (a memorising model's output)."""
    loaded = load_run(root / "run", torch.device("cpu"))
    train, _ = load_real(loaded, False, False, 4, "the test")
    for k, name in enumerate(names):
        path = root / "syn" / f"{name}_image.nii.gz"
        old = nib.load(path)
        copy = loaded.intensity.to_physical(train.images[k].numpy())[0]
        nib.save(nib.Nifti1Image(copy.reshape(old.shape).astype(np.float32), old.affine, old.header), path)
    return names


def test_a_near_copy_of_a_training_study_is_never_kept_and_every_drop_is_recorded(made, tmp_path):
    planted = plant_copies(made, ["syn_00001", "syn_00007"])
    result = run_cli("curate", made / "run", made / "syn", "--out", tmp_path / "cur")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "cur" / "generate.json").read_text())["curation"]
    for name in planted:
        assert record["dropped"][name] == "nearer a training study than any real held-out study"
    kept = pd.read_csv(tmp_path / "cur" / "samples.csv")
    assert not set(planted) & set(kept["study_id"]) and len(kept) == record["kept"] == 12 - len(record["dropped"])
    assert all((tmp_path / "cur" / name).is_file() for name in kept["image"])
    assert record["nearest_correlation_median"]["kept"] <= record["near_copy"]["limit"]
    assert isinstance(record["near_copy"]["holdout_near_identical_to_training"], int)
    assert set(record["plausible"]["classes"]) <= {"lesion", "normal"} and record["source_set"] == "syn"
    again = run_cli("evaluate", made / "run", tmp_path / "cur", "--out", tmp_path / "eval", "--no-utility")
    assert again.returncode == 0, again.stderr          # the curated set is a set like any other


def test_generate_curate_leaves_only_the_curated_set(made, tmp_path):
    result = run_cli("generate", made / "run", "--out", tmp_path / "cur", "--n", "8", "--curate")
    assert result.returncode == 0, result.stderr
    assert "kept" in result.stdout and "curation" in json.loads((tmp_path / "cur" / "generate.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cur"]        # no staging folder left behind
    assert_user_error(run_cli("curate", made / "run", made / "syn", "--out", tmp_path / "bad", "--quantile", "1.5"),
                      "--quantile")


def test_held_out_studies_that_repeat_a_training_image_are_told_apart_from_merely_similar_patients():
    from medsynth.evaluation.curate import shared_with_training

    ultrasound = np.array([0.88, 0.90, 0.91, 0.89, 0.9995, 0.9987])   # two held-out images repeat a training one
    phantoms = np.array([0.994, 0.995, 0.996, 0.995, 0.993])           # every patient alike, none repeated
    assert shared_with_training(ultrasound) == 2 and shared_with_training(phantoms) == 0


def test_a_stricter_quantile_keeps_a_subset_and_a_class_without_held_out_studies_loses_nothing():
    from medsynth.evaluation.curate import Plausibility

    real = (np.array([0.2, 0.4, 0.6, 0.8, 0.9, 0.7]), np.array([0, 0, 0, 0, 1, 1]))
    synthetic = (np.array([0.1, 0.3, 0.5, 0.7, 0.95, 0.05]), np.array([0, 0, 0, 0, 0, 2]))
    judged = Plausibility(6, real, synthetic)
    names = ["lesion", "normal", "rare"]
    kept = {q: judged.keep(q, names) for q in (0.0, 0.5, 0.9)}
    assert kept[0.0][0].tolist() == [False, True, True, True, True, True]       # below every real lesion: dropped
    assert kept[0.5][0].tolist() == [False, False, True, True, True, True]      # at least the median (0.5) is kept
    assert all((kept[0.9][0] <= kept[0.5][0]) & (kept[0.5][0] <= kept[0.0][0]))
    assert kept[0.5][1]["lesion"] == {"threshold": 0.5, "holdout_studies": 4} and "rare" not in kept[0.5][1]
    assert Plausibility(3).keep(0.5, names)[0].all()                              # a run without classes
