"""Evaluation: each metric is ideal on identical sets and clearly worse on different ones; the command end to end."""

import json

import numpy as np
import pytest

from medsynth.data.phantom import PhantomSpec, make_phantom
from medsynth.evaluation import metrics
from medsynth.config import EvaluateConfig
from medsynth.evaluation.evaluate import diversity, plane_mean_interval
from medsynth.evaluation.domain_gap import two_sample
from medsynth.evaluation.fidelity import compared, fidelity
from medsynth.evaluation.studies import StudySet, plane_slices
from medsynth.evaluation.segmenter import dice_per_label

from conftest import assert_user_error, run_cli


def phantoms(seed: int, n: int, size: int = 16) -> StudySet:
    studies = [make_phantom(PhantomSpec(size=size, seed=seed), k, k % 4 == 0) for k in range(n)]
    images = np.stack([np.clip(s.image / 1000.0, -1, 1) for s in studies]).astype(np.float32)
    return StudySet(images, np.stack([s.label for s in studies]), np.array([int(k % 4 == 0) for k in range(n)]))


def test_frechet_kid_and_intensity_distance_are_zero_on_identical_sets_and_large_on_shifted_ones():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 16))
    other = rng.normal(size=(400, 16))
    assert metrics.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert metrics.frechet_distance(a, other) < 0.5 < 5 < metrics.frechet_distance(a, other + 1)
    kid_same, _ = metrics.kernel_inception_distance(a, other)
    kid_far, _ = metrics.kernel_inception_distance(a, other + 1)
    assert abs(kid_same) < 0.05 < 1 < kid_far
    voxels = rng.normal(size=10_000)
    assert metrics.intensity_distance(voxels, voxels) == 0
    assert metrics.intensity_distance(voxels, voxels + 0.5) == pytest.approx(0.5, abs=0.01)


def test_the_frechet_ratio_interval_holds_one_for_a_real_like_set_and_not_for_a_shifted_one():
    rng = np.random.default_rng(0)
    holdout, reference, like, shifted = (rng.normal(size=(240, 8)) for _ in range(4))
    per_study = 4                                        # 60 studies of 4 slices each
    floor = metrics.frechet_distance(reference, holdout)
    boot = metrics.frechet_ratio_resamples(like, holdout, floor, per_study, 100, 0)
    sd, (lo, hi) = metrics.spread_interval(metrics.frechet_distance(like, holdout) / floor, boot)
    assert lo < 1 < hi and sd > 0
    far = metrics.frechet_distance(shifted + 0.5, holdout) / floor
    _, (lo, hi) = metrics.spread_interval(far, metrics.frechet_ratio_resamples(shifted + 0.5, holdout, floor,
                                                                              per_study, 100, 0))
    assert 3 < lo < far < hi
    # the same seed draws the same studies: scaling every feature scales both distances alike, so each resample's
    # ratio is unchanged (what averaging resamples over planes relies on)
    first = metrics.frechet_ratio_resamples(shifted, holdout, floor, per_study, 20, 3)
    scaled_floor = metrics.frechet_distance(2 * reference, 2 * holdout)
    assert np.allclose(first, metrics.frechet_ratio_resamples(2 * shifted, 2 * holdout, scaled_floor, per_study, 20, 3))
    assert not np.allclose(first, metrics.frechet_ratio_resamples(shifted, holdout, floor, per_study, 20, 4))


def test_the_mean_over_planes_interval_averages_the_same_resamples():
    planes = [{"frechet_ratio": 1.0, "frechet_ratio_resamples": [1.0, 3.0] * 50},
              {"frechet_ratio": 3.0, "frechet_ratio_resamples": [3.0, 1.0] * 50}]
    assert plane_mean_interval(planes) == [2.0, 2.0]        # resample k of every plane drew the same studies
    planes[1]["frechet_ratio_resamples"] = [1.0, 3.0] * 50  # planes that move together: the mean moves as much
    assert plane_mean_interval(planes) == pytest.approx([2.0 - 1.96 * np.std([1.0, 3.0] * 50, ddof=1),
                                                          2.0 + 1.96 * np.std([1.0, 3.0] * 50, ddof=1)])
    assert plane_mean_interval([planes[0], {"frechet_ratio": 1.0, "frechet_ratio_resamples": []}]) == [None, None]


def test_ms_ssim_is_one_for_copies_and_lower_for_different_studies():
    real = phantoms(0, 8)
    assert np.allclose(metrics.pairwise_ms_ssim(np.repeat(real.images[:1], 6, 0), 10), 1, atol=1e-4)
    assert metrics.pairwise_ms_ssim(real.images, 20).mean() < 0.99


def test_dice_is_one_on_the_truth_and_lower_when_the_mask_moves():
    truth = phantoms(0, 4).labels
    labels = int(truth.max())
    assert np.allclose(np.nanmean(dice_per_label(truth, truth, labels), 0), 1)
    shifted = np.roll(truth, 3, axis=1)
    assert np.nanmean(dice_per_label(shifted, truth, labels)) < 0.8


def test_plane_slices_take_each_axis():
    images = np.arange(2 * 1 * 4 * 5 * 6, dtype=np.float32).reshape(2, 1, 4, 5, 6)
    assert plane_slices(images, 0, 2).shape == (4, 1, 5, 6)
    assert plane_slices(images, 2, 3).shape == (6, 1, 4, 5)
    assert plane_slices(images[:, :, :, :, 0], None, 3).shape == (2, 1, 4, 5)


def test_fidelity_puts_a_real_set_at_the_real_reference_and_noise_far_away():
    train, holdout = phantoms(0, 24), phantoms(1, 16)
    s = EvaluateConfig(encoder_steps=30, slices=4)
    same = fidelity(train, holdout, holdout, s, show_progress=False)
    noise = StudySet(np.random.default_rng(0).uniform(-1, 1, holdout.images.shape).astype(np.float32), None, None)
    far = fidelity(train, holdout, noise, s, show_progress=False)
    assert set(same) == {"sagittal", "coronal", "axial"}
    for plane in same:
        assert same[plane]["frechet_synthetic"] == pytest.approx(0, abs=1e-3)       # the holdout against itself
        assert far[plane]["frechet_synthetic"] > 10 * max(far[plane]["frechet_real"], 1)
        assert far[plane]["kid_synthetic"] > far[plane]["kid_real"] + 3 * far[plane]["kid_real_sd"]
        assert far[plane]["frechet_ratio_interval"][0] > 3 > same[plane]["frechet_ratio_interval"][1]
        assert far[plane]["frechet_ratio_interval"][0] < far[plane]["frechet_ratio"] < far[plane]["frechet_ratio_interval"][1]


def test_diversity_shows_mode_collapse():
    train, holdout = phantoms(0, 12), phantoms(1, 8)
    collapsed = StudySet(np.repeat(holdout.images[:1], 8, 0), None, np.array([0, 1] * 4))
    result = diversity(train, holdout, collapsed, ["normal", "lesion"], EvaluateConfig(pairs=20))
    assert result["all"]["synthetic"]["mean"] == pytest.approx(1, abs=1e-4)
    assert result["all"]["real"]["interval"][1] < 0.99
    assert {"normal", "lesion"} <= set(result)


def test_evaluate_writes_every_section_for_a_class_and_mask_run(tiny_run):
    out = tiny_run / "eval"
    result = run_cli("evaluate", tiny_run / "run", tiny_run / "syn", "--out", out, "--steps", "30",
                     "--encoder-steps", "20", "--seeds", "2", "--slices", "4", "--pairs", "20")
    assert result.returncode == 0, result.stderr
    assert "Frechet distance" in result.stdout and "utility" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report["fidelity"]) == {"sagittal", "coronal", "axial"}
    assert report["fidelity"]["axial"]["compared"]["class_matched"]      # a class run is compared class for class
    assert "Compared class for class" in (out / "report.html").read_text()
    assert set(report["conditioning"]) == {"class", "mask"} and set(report["utility"]) == {"class", "mask"}
    for util in report["utility"].values():
        assert len(util["sets"]) == 3
        for scores in util["sets"].values():
            first = scores[util["metrics"][0]]
            assert first["n"] == 2 and first["interval"][0] <= first["mean"] <= first["interval"][1]
    assert report["studies"] == {"train": 36, "holdout": 24, "synthetic": 10}
    assert report["provenance"]["inputs"]["run_hash"] and report["provenance"]["config"]["seeds"] == 2
    page = (out / "report.html").read_text()
    for heading in ("Summary", "Samples", "Fidelity", "Diversity", "Conditioning", "Utility (classification)",
                    "Utility (segmentation)", "Settings and provenance"):
        assert heading in page
    assert page.count("data:image/png;base64,") >= 6
    low, high = report["summary"]["frechet_ratio_interval"]
    assert low <= high and "95% interval" in page and f"({low:.2f} to {high:.2f})" in page
    assert "alt='Frechet ratio to the real floor per plane, with 95% intervals'" in page


def test_evaluate_refuses_bad_settings_and_keeps_existing_reports(tiny_run, tmp_path):
    assert_user_error(run_cli("evaluate", tiny_run / "run", tiny_run / "syn", "--out", tmp_path / "e", "--seeds", "0"),
                      "--seeds")
    assert_user_error(run_cli("evaluate", tiny_run / "run", tiny_run / "syn", "--out", tmp_path / "e", "--boost", "-1"),
                      "--boost")
    assert_user_error(run_cli("evaluate", tiny_run / "run", tiny_run / "syn", "--out", tmp_path / "e", "--resamples",
                              "-1"), "--resamples")
    assert not (tmp_path / "e").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "report.json").write_text("{}")
    assert_user_error(run_cli("evaluate", tiny_run / "run", tiny_run / "syn", "--out", tmp_path / "kept"), "--overwrite")
    assert (tmp_path / "kept" / "report.json").read_text() == "{}"


def test_evaluate_a_2d_class_run_through_the_python_api(tmp_path):
    import medsynth

    medsynth.write_phantom_dataset(tmp_path / "data", medsynth.PhantomSpec(dims=2, size=16, cases=40))
    medsynth.ingest(tmp_path / "data", tmp_path / "cat", holdout=0.3, show_progress=False)
    medsynth.train(medsynth.load_config("tiny_2d.yaml"), tmp_path / "cat", tmp_path / "run", show_progress=False)
    medsynth.generate(tmp_path / "run", tmp_path / "syn", classes=["lesion=6", "normal=6"], show_progress=False)
    result = medsynth.evaluate(tmp_path / "run", tmp_path / "syn", tmp_path / "eval",
                               medsynth.EvaluateSettings(seeds=2, steps=20, encoder_steps=20, pairs=10, boost=4),
                               show_progress=False)
    report = json.loads((result.out / "report.json").read_text())
    assert list(report["fidelity"]) == ["image"] and set(report["conditioning"]) == {"class"}
    assert set(report["conditioning"]["class"]["classes"]) == {"lesion", "normal"}
    assert {"lesion", "normal", "all"} == set(report["diversity"])
    sets = report["utility"]["class"]["sets"]
    assert list(sets)[2].startswith("real + 4 synthetic ") and all(d["balanced_accuracy"]["n"] == 2 for d in sets.values())
    rare = report["utility"]["class"]["rare_class"]
    assert report["utility"]["class"]["metrics"][-1] == f"auc_{rare}"
    assert all(0 <= d[f"auc_{rare}"]["mean"] <= 1 and d[f"auc_{rare}"]["n"] == 2 for d in sets.values())
    assert 0 <= result.summary["class_accuracy_synthetic"] <= 1


def test_the_verdict_helps_only_when_every_recipe_lifts_and_hurts_when_one_drops():
    from medsynth.evaluation.recipes import lift, verdict

    up = lift([0.8, 0.82, 0.79], [0.6, 0.61, 0.58])
    crossing = lift([0.7, 0.5, 0.66], [0.6, 0.61, 0.58])
    down = lift([0.4, 0.41, 0.39], [0.6, 0.61, 0.58])
    assert up["interval"][0] > 0 and crossing["interval"][0] < 0 < crossing["interval"][1]
    assert verdict({"a": up, "b": up}) == "helps"
    assert verdict({"a": up, "b": crossing}) == "neutral"          # one recipe's interval crosses zero: not "helps"
    assert verdict({"a": up, "b": down}) == "hurts"


def test_the_recipe_family_runs_end_to_end_and_reports_each_recipe(tmp_path):
    import medsynth
    from medsynth.evaluation.recipes import CLASSIFIERS, MIXES

    data = medsynth.write_phantom_dataset(tmp_path / "data", medsynth.PhantomSpec(dims=2, size=16, cases=30,
                                                                                  prevalence=0.3), show_progress=False)
    medsynth.train(medsynth.load_config("tiny_2d.yaml", ["data.holdout=0.4", "train.max_steps=10"]), data,
                   tmp_path / "run", show_progress=False)
    medsynth.generate(tmp_path / "run", tmp_path / "syn", classes=["lesion=6", "normal=4"], steps=2, max_attempts=1,
                      show_progress=False)
    result = medsynth.evaluate(tmp_path / "run", tmp_path / "syn", tmp_path / "eval",
                               medsynth.EvaluateConfig(seeds=2, steps=5, encoder_steps=5, pairs=5, family=True),
                               show_progress=False)
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    family = report["utility_family"]["class"]
    assert set(family["recipes"]) == {f"{r}, {m}" for r in CLASSIFIERS for m in MIXES}
    for row in family["recipes"].values():
        assert row["lift"]["n"] == 2 and row["real only"][family["metric"]]["n"] == 2
        assert row["auc_lift"]["n"] == 2 and 0 <= row["real only"]["auc_lesion"]["mean"] <= 1
        assert row["matched_lift"]["n"] == 2 and 0 <= row["matched_lift"]["specificity"] <= 1
    assert family["verdict"] in ("helps", "neutral", "hurts") and result.summary["recipes_verdict_class"] == family["verdict"]
    assert result.summary["recipes_auc_verdict_class"] == family["auc_verdict"] in ("helps", "neutral", "hurts")
    assert result.summary["recipes_matched_verdict_class"] == family["matched_verdict"] in ("helps", "neutral", "hurts")
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "Utility over every downstream recipe (class)" in page and "AUC lift" in page
    assert "lift at real only&#x27;s specificity" in page or "lift at real only's specificity" in page
    assert "alt='lift per recipe' src='data:image/png;base64," in page
    gap = family["domain_gap"]                   # can each network tell the synthetic studies from real ones
    assert gap and set(gap) <= {"lesion", "normal"}
    assert all(set(by) == {"classifier", "resnet18-quarter"} and 0 <= d["mean"] <= 1 and d["n"] == 2
               for by in gap.values() for d in by.values())
    assert "real vs synthetic AUC" in page


def test_a_recipe_scores_the_rare_class_auc_apart_from_its_decisions():
    """A model that ranks every rare study above every other one but never calls the rare class: recall 0, AUC 1."""
    import torch

    from medsynth.evaluation.classifier import probabilities
    from medsynth.evaluation.recipes import scores_on

    class Shy(torch.nn.Module):   # rare-class logit rises with the image's brightness but stays below the other's
        def forward(self, x):
            bright = x.mean(dim=(1, 2, 3))
            return torch.stack([bright - 10.0, torch.zeros_like(bright)], 1)

    classes = np.array([0, 0, 1, 1, 1, 1])
    images = (1.0 - classes).astype(np.float32).reshape(-1, 1, 1, 1) * np.ones((1, 1, 4, 4), np.float32)
    probs = probabilities(Shy(), images)
    recall, balanced, auc = scores_on(probs, classes, rare=0, classes=2)
    assert recall == 0.0 and balanced == 0.5 and auc == 1.0
    assert scores_on(probs, 1 - classes, rare=0, classes=2)[2] == 0.0   # now the rare studies are the darker ones


def test_the_recipe_family_on_a_mask_run_has_both_segmenters_and_the_cli_prints_its_verdicts(tiny_run, tmp_path):
    from medsynth.evaluation.recipes import SEGMENT_MIXES, SEGMENTERS

    result = run_cli("evaluate", tiny_run / "run", tiny_run / "syn", "--out", tmp_path / "e", "--family", "--seeds", "1",
                     "--steps", "5", "--encoder-steps", "5", "--slices", "2", "--pairs", "5")
    assert result.returncode == 0, result.stderr
    family = json.loads((tmp_path / "e" / "report.json").read_text())["utility_family"]
    assert set(family) == {"class", "mask"}
    assert set(family["mask"]["recipes"]) == {f"{r}, {m}" for r in SEGMENTERS for m in SEGMENT_MIXES}
    assert "over every downstream recipe (class): the synthetic set" in result.stdout
    assert "over every downstream recipe (mask)" in result.stdout
    assert "over every downstream recipe (class), in the rare class's ROC AUC" in result.stdout
    assert "over every downstream recipe (class), in recall at real only's specificity" in result.stdout
    assert "in the rare class's ROC AUC" not in result.stdout.split("(mask)")[1]   # segmentation has no AUC


def test_the_family_trains_real_only_once_for_several_synthetic_sets_and_runs_only_the_recipes_asked(monkeypatch):
    from types import SimpleNamespace

    from medsynth.config import EvaluateConfig
    from medsynth.evaluation import recipes

    rng = np.random.default_rng(0)
    study = lambda n, rare: SimpleNamespace(images=rng.normal(size=(n, 1, 8, 8)).astype(np.float32),  # noqa: E731
                                            classes=(np.arange(n) % rare == 0).astype(np.int64) ^ 1)
    train, holdout = study(24, 4), study(12, 3)
    trained = []
    original = recipes.cls.train_classifier
    monkeypatch.setattr(recipes.cls, "train_classifier", lambda *a, **k: trained.append(k["network"]) or original(*a, **k))
    s, cache = EvaluateConfig(seeds=2, steps=2), {}
    first = recipes.classification_family(train, holdout, study(10, 2), ["a", "b"], s, False,
                                          only=("monai-classifier",), cache=cache)
    second = recipes.classification_family(train, holdout, study(10, 2), ["a", "b"], s, False,
                                           only=("monai-classifier",), cache=cache)
    assert set(first["recipes"]) == {"monai-classifier, balance", "monai-classifier, fixed"}
    assert len(trained) == 4 * 2 + 3 * 2                 # the second set reuses the real-only models of the first
    assert first["recipes"]["monai-classifier, fixed"]["real only"] == second["recipes"]["monai-classifier, fixed"]["real only"]
    recipes.classification_family(train, study(12, 2), study(10, 2), ["a", "b"], s, False, only=("monai-classifier",),
                                  cache=cache)
    assert len(trained) == 4 * 2 + 3 * 2 + 4 * 2       # another holdout: real only is scored again


def test_the_segmentation_family_mixes_a_fixed_count_and_gives_the_epochs_recipe_steps_in_proportion(monkeypatch):
    from types import SimpleNamespace

    from medsynth.config import EvaluateConfig
    from medsynth.evaluation import recipes

    rng = np.random.default_rng(0)
    pairs = lambda n: SimpleNamespace(images=rng.normal(size=(n, 1, 8, 8)).astype(np.float32),  # noqa: E731
                                      labels=(rng.random((n, 8, 8)) > 0.7).astype(np.int64))
    trained = []
    original = recipes.segmenter.train_segmenter
    monkeypatch.setattr(recipes.segmenter, "train_segmenter",
                        lambda x, *a, **k: trained.append((k["network"], len(x), k["steps"])) or original(x, *a, **k))
    family = recipes.segmentation_family(pairs(16), pairs(6), pairs(12), 1, EvaluateConfig(seeds=1, steps=4), False)
    assert family["added"] == {"all": 12, "fixed": 8}          # fixed: half the real count when no boost is asked
    epochs = [(n, steps) for network, n, steps in trained[8:]]
    assert family["epochs"] == 2 and epochs == [(12, 3), (28, 7), (24, 6)]   # 2 passes over each set of 8
    assert all(steps == 4 for _, _, steps in trained[:8])     # the steps recipes train every set for the same steps
    rows = family["recipes"]
    # 2 passes over the 16 real studies are the steps UNet's 4 steps: that model is not trained twice
    assert len(trained) == 11 and rows["monai-unet-epochs, all"]["real only"] == rows["monai-unet, all"]["real only"]
    assert {r["lift"]["n"] for r in rows.values()} == {1}


def test_the_family_reuses_the_segmenters_the_evaluation_already_trained(monkeypatch):
    from types import SimpleNamespace

    from medsynth.config import EvaluateConfig
    from medsynth.evaluation import evaluate, recipes

    rng = np.random.default_rng(1)
    pairs = lambda n: SimpleNamespace(images=rng.normal(size=(n, 1, 8, 8)).astype(np.float32),  # noqa: E731
                                      labels=(rng.random((n, 8, 8)) > 0.7).astype(np.int64))
    train, holdout, synthetic = pairs(16), pairs(6), pairs(12)
    calls = []
    original = recipes.segmenter.train_segmenter
    monkeypatch.setattr(recipes.segmenter, "train_segmenter", lambda x, y, *a, **k: calls.append(
        (k.get("network", "unet"), k["steps"], k["seed"], recipes.fingerprint(x, y))) or original(x, y, *a, **k))
    s, trained = EvaluateConfig(seeds=2, steps=4), {}
    loaded = SimpleNamespace(num_labels=2, label_names=lambda: {1: "lesion"})
    _, utility = evaluate.segmentation(train, holdout, synthetic, loaded, s, False, trained)
    family = recipes.segmentation_family(train, holdout, synthetic, 1, s, False, cache=trained)
    assert len(calls) == len(set(calls))       # no segmenter is trained twice on the same data with the same settings
    assert len(calls) == 3 * 2 + (1 + 4 + 3) * 2   # the family adds the UNet's fixed mix, SegResNet, the epochs UNet
    for name, mix in (("real only", "all"), ("synthetic only", "all"), ("real + synthetic", "all")):
        row = family["recipes"][f"monai-unet, {mix}"]
        family_name = name if name != "real + synthetic" else "real + synthetic (all)"
        assert row[family_name]["mean_dice"] == utility["sets"][name]["mean_dice"]


def two_class_images(seed: int, rare: int, common: int) -> StudySet:
    """2D images whose class is easy to see (a bright or a dark disc on noise): `rare` of class 0, `common` of 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    disc = ((yy - 8) ** 2 + (xx - 8) ** 2 < 20).astype(np.float32)
    classes = np.r_[np.zeros(rare, int), np.ones(common, int)]
    images = np.where(classes[:, None, None] == 0, 0.6, -0.6) * disc + 0.2 * rng.normal(size=(len(classes), 16, 16))
    return StudySet(np.clip(images, -1, 1)[:, None].astype(np.float32), None, classes)


def test_compared_draws_synthetic_and_reference_to_the_holdout_class_shares():
    train, holdout = two_class_images(0, 30, 90), two_class_images(1, 10, 30)
    boosted = two_class_images(2, 60, 20)                  # a set made to boost the rare class: 75% of it
    held, synthetic, reference, record = compared(train, holdout, boosted, seed=0)
    assert np.bincount(synthetic.classes).tolist() == np.bincount(reference.classes).tolist() == [7, 20]
    assert record["class_matched"] and record["classes"]["0"] == {"holdout": 10, "synthetic": 7, "reference": 7}
    rare_only = StudySet(boosted.images[:60], None, boosted.classes[:60])      # a set of the rare class alone
    held, synthetic, reference, _ = compared(train, holdout, rare_only, seed=0)
    assert set(held.classes) == set(synthetic.classes) == set(reference.classes) == {0} and len(held.images) == 10
    unlabelled = StudySet(boosted.images, None, None)
    held, synthetic, reference, record = compared(train, holdout, unlabelled, seed=0)
    assert len(synthetic.images) == len(reference.images) == 80 and not record["class_matched"]


def test_fidelity_of_a_real_like_set_holds_one_whatever_its_class_mix():
    train, holdout = two_class_images(0, 60, 180), two_class_images(1, 40, 120)
    boosted = two_class_images(2, 240, 80)                 # the same kind of images, three quarters of the rare class
    result = fidelity(train, holdout, boosted, EvaluateConfig(encoder_steps=40, steps=150), show_progress=False)
    for space in (result["image"], result["image"]["second"]):
        assert space["frechet_ratio"] < 2 and space["frechet_ratio_interval"][0] < 1.2


def test_a_network_tells_marked_synthetic_studies_from_real_ones_and_not_real_like_ones():
    """The domain gap: studies of the real kind score near chance; the same studies with a faint haze in one corner
    (like a background the window should have clipped to its minimum) are told apart."""
    real, unseen = two_class_images(0, 0, 80).images, two_class_images(1, 0, 40).images
    like = two_class_images(2, 0, 120).images
    marked = like.copy()
    marked[:, :, :4, :4] += 0.3
    near = two_sample(real, unseen, like, "classifier", seeds=2, steps=150)
    far = two_sample(real, unseen, marked, "classifier", seeds=2, steps=150)
    assert near["trained_on"] == [60, 60] and near["scored_on"] == [40, 40]
    assert near["mean"] < 0.7 < 0.9 < far["mean"]
