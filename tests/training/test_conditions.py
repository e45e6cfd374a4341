"""Extra conditions (#19): further categorical columns and covariates beside the class, through training and
generation on phantoms whose anatomy follows sex and age."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import medsynth
from medsynth.conditioning import Column, Conditions, ConditionSpec
from medsynth.errors import MedsynthError
from conftest import assert_user_error, run_cli

EXTRA = ["conditioning.classes=[pathology,sex]", "conditioning.covariates=[age]"]


@pytest.fixture(scope="module")
def covariate_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("conditions")
    data = medsynth.write_phantom_dataset(root / "data", medsynth.PhantomSpec(dims=2, size=16, cases=24), show_progress=False)
    medsynth.train(medsynth.load_config("tiny_2d.yaml", [*EXTRA, "train.max_steps=6"]), data, root / "run",
                   show_progress=False)
    return root


def test_a_column_encodes_known_values_refuses_the_rest_and_leaves_blanks_out():
    sex, age = Column("sex", ("F", "M")), Column("age", stats=(55.0, 10.0, 25.0, 85.0))
    assert sex.encode("M") == 1.0 and sex.encode("F") == 0.0 and np.isnan(sex.encode(""))
    assert age.encode("75") == pytest.approx(2.0) and np.isnan(age.encode(None))
    with pytest.raises(MedsynthError, match=r"sex 'X' is not a value the run knows \(F, M\)"):
        sex.encode("X")
    with pytest.raises(MedsynthError, match="outside the training range 25 to 85.*--extrapolate"):
        age.encode(95)
    assert age.encode(95, extrapolate=True) == pytest.approx(4.0)
    spec = ConditionSpec(("lesion", "normal"), extras=(sex, age))
    extra = spec.extra_values([{"sex": "F", "age": 65}, {"age": 45}])
    assert extra.shape == (2, 2) and torch.isnan(extra[1, 0]) and spec.conditions(None, None, extra).null(2).extra.isnan().all()


CROSS = ["model.condition_path=cross_attention", "model.attention_levels=[false,true]"]


@pytest.mark.parametrize("path", [[], CROSS, ["model.covariate_embedding=fourier"],
                                  ["model.embedding_mode=scale_shift"]],
                         ids=["summed", "cross-attention", "fourier-covariates", "scale-shift"])
def test_each_condition_moves_the_model_and_a_left_out_one_is_its_null_form(path):
    from medsynth.config import load_config
    from medsynth.models import build_denoiser

    extras = (Column("sex", ("F", "M")), Column("age", stats=(55.0, 10.0, 25.0, 85.0)))
    torch.manual_seed(0)
    model = build_denoiser(load_config("tiny_2d.yaml", [*EXTRA, *path]).model, 2, 1, 0, 2, extras)
    assert (model.tokens is not None) == (path == CROSS)
    for param in model.parameters():     # MONAI zero-initialises output layers: wake them so every input shows
        if not param.any():
            torch.nn.init.normal_(param, std=0.5)
    x, t, classes = torch.randn(1, 1, 16, 16), torch.tensor([500]), torch.tensor([0])
    out = lambda extra: model(x, t, Conditions(classes, None, torch.tensor([extra])))  # noqa: E731
    nan = float("nan")
    assert not torch.allclose(out([0.0, 1.0]), out([1.0, 1.0]))      # sex matters
    assert not torch.allclose(out([0.0, 1.0]), out([0.0, -1.0]))     # age matters
    assert torch.allclose(out([nan, nan]), model(x, t, Conditions(classes)))   # left out = not given


def test_training_records_the_columns_and_generation_keeps_fixed_conditions_and_draws_the_rest(covariate_run, tmp_path):
    from medsynth.runs.loaded import load_run

    run = load_run(covariate_run / "run", torch.device("cpu"))
    assert [c.name for c in run.extras] == ["sex", "age"] and run.extras[0].values == ("F", "M")
    labels = pd.read_csv(covariate_run / "data" / "labels.csv")
    train_ages = [r["age"] for r in run.meta["condition_rows"]]
    assert run.extras[1].stats[2] == min(train_ages) and set(train_ages) <= set(labels["age"])
    medsynth.generate(covariate_run / "run", tmp_path / "f", n=6, conditions=("sex=F",), steps=2, max_attempts=1,
                      show_progress=False)
    table = pd.read_csv(tmp_path / "f" / "samples.csv")
    assert list(table["sex"]) == ["F"] * 6 and table["age"].between(min(train_ages), max(train_ages)).all()
    record = json.loads((tmp_path / "f" / "syn_00000.json").read_text())
    assert record["conditions"]["sex"] == "F" and record["conditions"]["age"] == table["age"][0]
    rows = {(r["class"], r["sex"], r["age"]) for r in run.meta["condition_rows"]}
    assert all((c, "F", a) in rows for c, a in zip(table["class"], table["age"]))   # drawn jointly from a real row


def test_a_cross_attention_run_trains_resumes_and_generates_with_its_conditions(tmp_path):
    data = medsynth.write_phantom_dataset(tmp_path / "data", medsynth.PhantomSpec(dims=2, size=16, cases=12),
                                          show_progress=False)
    cfg = medsynth.load_config("tiny_2d.yaml", [*EXTRA, *CROSS, "train.max_steps=4", "train.checkpoint_every=2"])
    assert medsynth.train(cfg, data, tmp_path / "run", stop_at=2, show_progress=False).step == 2
    assert medsynth.train(cfg, data, tmp_path / "run", resume=True, show_progress=False).step == 4
    medsynth.generate(tmp_path / "run", tmp_path / "syn", n=3, conditions=("sex=M", "age=60"), steps=2, max_attempts=1,
                      show_progress=False)
    table = pd.read_csv(tmp_path / "syn" / "samples.csv")
    assert list(table["sex"]) == ["M"] * 3 and list(table["age"]) == [60] * 3


@pytest.mark.parametrize("overrides, message", [
    (CROSS[:1], "needs at least one level with attention"),
    (["conditioning.covariates=[]", "conditioning.classes=[pathology]", *CROSS], "attends to the conditions beyond"),
    ([CROSS[0].replace("cross_attention", "film")], "must be 'embedding' or 'cross_attention'"),
    (["model.embedding_mode=film"], "model.embedding_mode must be 'add' or 'scale_shift', got 'film'"),
])
def test_cross_attention_without_conditions_or_attention_levels_is_refused(overrides, message):
    from medsynth.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        medsynth.load_config("tiny_2d.yaml", [*EXTRA, *overrides])


def test_unknown_conditions_and_out_of_range_covariates_are_refused_at_the_cli(covariate_run, tmp_path):
    run = covariate_run / "run"
    assert_user_error(run_cli("generate", run, "--out", tmp_path / "a", "--condition", "bmi=30"),
                      "'bmi' is not a condition of this run", "sex, age")
    assert_user_error(run_cli("generate", run, "--out", tmp_path / "b", "--condition", "sex=X"), "(F, M)")
    assert_user_error(run_cli("generate", run, "--out", tmp_path / "c", "--condition", "age=200"),
                      "outside the training range", "--extrapolate")
    assert not any((tmp_path / k).exists() for k in "abc")
    made = run_cli("generate", run, "--out", tmp_path / "d", "--n", "2", "--condition", "age=90", "--extrapolate",
                   "--steps", "2")
    assert made.returncode == 0, made.stderr
    assert list(pd.read_csv(tmp_path / "d" / "samples.csv")["age"]) == [90, 90]


def test_a_config_whose_columns_the_data_lacks_or_that_are_not_numbers_is_refused(tmp_path):
    data = medsynth.write_phantom_dataset(tmp_path / "data", medsynth.PhantomSpec(dims=2, size=16, cases=12),
                                          show_progress=False)
    with pytest.raises(MedsynthError, match="column 'bmi'"):
        medsynth.train(medsynth.load_config("tiny_2d.yaml", ["conditioning.covariates=[bmi]"]), data, tmp_path / "r",
                       show_progress=False)
    with pytest.raises(MedsynthError, match="covariate 'sex' holds .*not a number"):
        medsynth.train(medsynth.load_config("tiny_2d.yaml", ["conditioning.covariates=[sex]"]), data, tmp_path / "r",
                       show_progress=False)
    assert not (tmp_path / "r").exists()


def test_a_structured_prompt_and_a_conditions_table_choose_each_study(covariate_run, tmp_path):
    run = covariate_run / "run"
    medsynth.generate(run, tmp_path / "p", n=4, prompt="lesion, f, age 60-70", steps=2, max_attempts=1,
                      show_progress=False)
    table = pd.read_csv(tmp_path / "p" / "samples.csv")
    assert list(table["class"]) == ["lesion"] * 4 and list(table["sex"]) == ["F"] * 4
    assert table["age"].between(60, 70).all() and table["age"].nunique() > 1
    with pytest.raises(MedsynthError, match="'tumour' matches nothing this run knows .*lesion, normal, F, M, age"):
        medsynth.generate(run, tmp_path / "q", prompt="tumour, F", show_progress=False)
    rows = tmp_path / "rows.csv"
    pd.DataFrame({"class": ["normal", "lesion", ""], "sex": ["M", "", "F"], "age": ["40", "70", ""]}).to_csv(rows, index=False)
    medsynth.generate(run, tmp_path / "t", condition_table=str(rows), steps=2, max_attempts=1, show_progress=False)
    made = pd.read_csv(tmp_path / "t" / "samples.csv")
    assert list(made["class"][:2]) == ["normal", "lesion"] and made["sex"][0] == "M" and made["sex"][2] == "F"
    assert list(made["age"][:2]) == [40, 70] and made["sex"][1] in ("F", "M") and not np.isnan(made["age"][2])
    pd.DataFrame({"weight": [70]}).to_csv(rows, index=False)
    with pytest.raises(MedsynthError, match="column 'weight', which is not a condition of this run"):
        medsynth.generate(run, tmp_path / "u", condition_table=str(rows), show_progress=False)


def test_export_writes_the_requested_conditions_to_manifest_card_and_dicom_patient_attributes(covariate_run, tmp_path):
    import pydicom

    from medsynth.exporter.dicom import patient_attributes

    assert patient_attributes({"sex": "female", "age": 72.4, "weight": 80, "height": 172, "site": "x"}) == \
        {"PatientSex": "F", "PatientAge": "072Y", "PatientWeight": "80.0", "PatientSize": "1.72"}
    medsynth.generate(covariate_run / "run", tmp_path / "s", n=2, conditions=("sex=M", "age=61"), steps=2,
                      max_attempts=1, show_progress=False)
    medsynth.export(tmp_path / "s", tmp_path / "e", ["nifti", "dicom"], medsynth.ExportConfig(force=True, workers=1),
                    show_progress=False)
    manifest = pd.read_csv(tmp_path / "e" / "manifest.csv")
    assert set(manifest["sex"].dropna()) == {"M"} and set(manifest["age"].dropna()) == {61}
    assert "sex (requested): M: 2" in (tmp_path / "e" / "dataset_card.md").read_text()
    first = pydicom.dcmread(next((tmp_path / "e" / "dicom").rglob("IM00001.dcm")))
    assert (first.PatientSex, first.PatientAge) == ("M", "061Y")


def test_evaluate_reads_each_condition_back_next_to_real_holdout(covariate_run, tmp_path):
    medsynth.generate(covariate_run / "run", tmp_path / "s", n=8, steps=2, max_attempts=1, show_progress=False)
    medsynth.evaluate(covariate_run / "run", tmp_path / "s", tmp_path / "e",
                      medsynth.EvaluateConfig(seeds=1, steps=3, encoder_steps=3, pairs=3, utility=False),
                      show_progress=False)
    report = json.loads((tmp_path / "e" / "report.json").read_text())["conditioning"]["conditions"]
    assert set(report) == {"sex", "age"} and set(report["sex"]["values"]) == {"F", "M"}
    assert sum(v["synthetic_studies"] for v in report["sex"]["values"].values()) == 8
    for figure in ("synthetic", "holdout"):
        assert report["age"][figure]["mae"] >= 0 and report["age"][figure]["studies"] > 0
    assert "does each study show the conditions it was asked for" in (tmp_path / "e" / "report.html").read_text()


def test_one_conditions_own_guidance_scale_changes_only_when_it_differs_from_one(covariate_run, tmp_path):
    import nibabel as nib

    def image(name, per):
        medsynth.generate(covariate_run / "run", tmp_path / name, n=1, conditions=("sex=F", "age=50"), steps=2,
                          max_attempts=1, guidance_per=per, show_progress=False)
        return np.asarray(nib.load(tmp_path / name / "syn_00000_image.nii.gz").dataobj)

    plain = image("plain", ())
    assert np.array_equal(plain, image("one", ("sex=1",)))
    assert not np.array_equal(plain, image("strong", ("sex=6", "pathology=3")))
    with pytest.raises(MedsynthError, match=r"--guidance-per 'bmi=2' .*\(sex, age, pathology\)"):
        medsynth.generate(covariate_run / "run", tmp_path / "x", guidance_per=("bmi=2",), show_progress=False)


def test_training_leaves_every_condition_out_with_the_class_and_each_one_out_on_its_own():
    from types import SimpleNamespace

    from medsynth.config import load_config
    from medsynth.training.loop import extra_dropped

    cfg = load_config("tiny_2d.yaml", [*EXTRA, "conditioning.condition_dropout=0.3"])
    n = 4000
    ts = SimpleNamespace(extra=torch.zeros(n, 2))
    classes = torch.where(torch.rand(n, generator=torch.Generator().manual_seed(1)) < 0.15, 2, 0)
    extra = extra_dropped(ts, torch.arange(n), classes, 2, cfg, torch.Generator().manual_seed(0))
    dropped = extra.isnan()
    assert dropped[classes == 2].all()                                   # the unconditional branch: all left out
    alone = dropped[classes != 2].float().mean(0)
    assert ((alone > 0.27) & (alone < 0.33)).all()                       # each on its own at condition_dropout
    both = (dropped[classes != 2].all(1)).float().mean()
    assert 0.06 < both < 0.12                                            # independent: about 0.3 x 0.3


@pytest.mark.parametrize("path", [[], ["model.condition_path=cross_attention"], ["model.embedding_mode=scale_shift"]],
                         ids=["summed", "cross-attention", "scale-shift"])
def test_a_latent_run_and_its_controlnet_take_the_same_conditions(path, tmp_path):
    from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
    from medsynth.runs.loaded import load_run

    data = medsynth.write_phantom_dataset(tmp_path / "data", medsynth.PhantomSpec(dims=3, size=16, cases=10),
                                          show_progress=False)
    cfg = medsynth.load_config("tiny_latent_3d.yaml", [*EXTRA, *path, "model.attention_levels=[false,true]",
                                                        "latent.steps=4", "latent.controlnet_steps=4",
                                                        "train.max_steps=4"])
    medsynth.train(cfg, data, tmp_path / "run", show_progress=False)
    loaded = load_run(tmp_path / "run", torch.device("cpu"))
    assert [c.name for c in loaded.extras] == ["sex", "age"]
    assert (loaded.model.base.tokens is not None) == ("cross_attention" in str(path))
    blocks = [m for net in (loaded.model.base.net, loaded.model.controlnet) for m in net.modules()
              if isinstance(m, DiffusionUNetResnetBlock)]     # base and ControlNet take the embedding the same way
    widths = 2 if "scale_shift" in str(path) else 1
    assert all(b.time_emb_proj.out_features == widths * b.out_channels for b in blocks)
    mask = torch.zeros(1, loaded.num_labels, 16, 16, 16)
    mask[:, 1, 4:12, 4:12, 4:12] = 1
    x, t, classes = torch.randn(1, *loaded.model_shape), torch.tensor([500.0]), torch.tensor([0])
    with torch.no_grad():
        woman, man = (loaded.model(x, t, Conditions(classes, mask, torch.tensor([[s, 0.0]]))) for s in (0.0, 1.0))
        controls = [loaded.model.controlnet(x, t, mask, **loaded.model.base.class_kwargs(x, classes, torch.tensor([[s, 0.0]])))[1]
                    for s in (0.0, 1.0)]
    assert not torch.equal(woman, man) and not torch.equal(*controls)    # the ControlNet reads the conditions too
    medsynth.generate(tmp_path / "run", tmp_path / "syn", n=2, conditions=("sex=M", "age=60"), steps=2, max_attempts=1,
                      show_progress=False)
    assert list(pd.read_csv(tmp_path / "syn" / "samples.csv")["sex"]) == ["M", "M"]


def test_the_audits_pairs_carry_each_synthetic_studys_conditions(tmp_path):
    from medsynth.config import AuditConfig

    data = medsynth.write_phantom_dataset(tmp_path / "data", medsynth.PhantomSpec(dims=2, size=16, cases=84),
                                          show_progress=False)
    medsynth.train(medsynth.load_config("tiny_2d.yaml", [*EXTRA, "train.max_steps=2"]), data, tmp_path / "run",
                   show_progress=False)
    medsynth.generate(tmp_path / "run", tmp_path / "syn", n=4, conditions=("sex=F",), steps=2, max_attempts=1,
                      show_progress=False)
    medsynth.audit(tmp_path / "run", tmp_path / "syn", tmp_path / "rep",
                   AuditConfig(copies_per_kind=2, embedding=False, membership=False), show_progress=False)
    pairs = pd.read_csv(tmp_path / "rep" / "pairs.csv", dtype={"study_id": str})
    samples = pd.read_csv(tmp_path / "syn" / "samples.csv", dtype={"study_id": str})
    assert list(pairs.columns[:4]) == ["study_id", "class", "sex", "age"]
    assert pairs.set_index("study_id")[["sex", "age"]].equals(samples.set_index("study_id")[["sex", "age"]])
