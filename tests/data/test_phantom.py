"""The built-in phantoms: deterministic per seed, realistic units, a rare class, written and read like user data."""

import numpy as np
import pandas as pd
import pytest

from medsynth.data.ingest import ingest
from medsynth.data.phantom import LABEL_NAMES, PhantomSpec, lesion_cases, make_phantom, write_phantom_dataset
from medsynth.data.readers import load_study, scan
from medsynth.errors import MedsynthError


def test_same_seed_same_phantom_other_seed_other_phantom():
    spec = PhantomSpec(size=24, cases=4, seed=5)
    a, b = make_phantom(spec, 2, True), make_phantom(spec, 2, True)
    assert a.image.tobytes() == b.image.tobytes() and a.label.tobytes() == b.label.tobytes()
    c = make_phantom(PhantomSpec(size=24, cases=4, seed=6), 2, True)
    assert not np.array_equal(a.label, c.label)
    assert not np.array_equal(make_phantom(spec, 1, False).label, make_phantom(spec, 3, False).label)


def test_ct_phantom_is_in_hounsfield_units():
    study = make_phantom(PhantomSpec(size=48, modality="CT"), 0, True)
    mean = {name: float(study.image[0][study.label == k].mean()) for k, name in LABEL_NAMES.items()}
    assert mean["background"] < -950 and 30 < mean["liver"] < 90 and mean["bone"] > 300
    assert mean["lesion"] < mean["liver"] - 20  # a hypodense lesion the model must learn to draw
    assert study.image.min() >= -1024 and study.image.max() <= 3071


def test_mr_phantom_has_bright_lesion_and_dark_background():
    study = make_phantom(PhantomSpec(size=48, modality="MR"), 0, True)
    image, label = study.image[0], study.label
    assert image[label == 0].mean() < 50 and image[label == 5].mean() > 1.5 * image[label == 2].mean()


def test_lesion_class_is_rare_and_only_lesion_cases_have_lesion_voxels():
    spec = PhantomSpec(size=16, cases=20, prevalence=0.2, seed=1)
    lesions = lesion_cases(spec)
    assert len(lesions) == 4
    for k in range(6):
        study = make_phantom(spec, k, k in lesions)
        assert bool(np.any(study.label == 5)) == (k in lesions)
        assert study.classes["pathology"] == ("lesion" if k in lesions else "normal")


def test_two_d_phantom():
    study = make_phantom(PhantomSpec(dims=2, size=32), 0, True)
    assert study.image.shape == (1, 32, 32) and study.spacing == (10.0, 10.0) and np.any(study.label == 5)


def test_written_dataset_reads_back_through_the_user_readers(tmp_path):
    spec = PhantomSpec(size=16, cases=5, seed=2, modality="MR")
    write_phantom_dataset(tmp_path / "ph", spec, show_progress=False)
    found = scan(tmp_path / "ph")
    assert found.kind == "MSD dataset" and found.label_names == LABEL_NAMES
    study = load_study(found.refs[1], found.label_names)
    original = make_phantom(spec, 1, 1 in lesion_cases(spec))
    np.testing.assert_allclose(study.image, original.image)
    np.testing.assert_array_equal(study.label, original.label)
    labels = pd.read_csv(tmp_path / "ph" / "labels.csv")
    assert list(labels.columns) == ["case_id", "pathology", "age", "sex"]
    catalog = ingest(tmp_path / "ph", show_progress=False).catalog  # picks up labels.csv by itself
    assert catalog["pathology"].tolist() == labels["pathology"].tolist()


def test_bad_spec_is_refused():
    with pytest.raises(MedsynthError, match="--dims must be 2 or 3"):
        PhantomSpec(dims=4)
