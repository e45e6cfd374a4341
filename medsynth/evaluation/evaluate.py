"""`medsynth evaluate RUN SYNTH --out DIR`: is the synthetic set faithful, diverse, correctly conditioned and useful?

Every figure sits next to the same figure for real data, because none means much alone:
- fidelity (fidelity.py): Frechet distance and KID between real holdout and synthetic studies in two feature spaces
  learnt from the run's training studies with different objectives (a contrastive encoder; a supervised classifier),
  per plane for 3D (sagittal, coronal, axial slices), class for class, next to real train vs holdout and as a ratio
  to that floor;
  Wasserstein distance between intensity distributions per label region (or per class);
- diversity: MS-SSIM among synthetic pairs next to MS-SSIM among real pairs, per class (mode collapse shows as
  higher similarity);
- conditioning: a classifier (class runs) or UNet segmenter (mask runs) trained on real training studies judges the
  synthetic studies: accuracy per requested class or Dice against the conditioning mask, next to real holdout;
- utility: the same downstream model trained on real only, synthetic only and real + synthetic (rare class boosted),
  tested on real holdout over several seeds.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsynth import provenance
from medsynth.config import EvaluateConfig, as_dict
from medsynth.errors import MedsynthError
from medsynth.evaluation import classifier as cls
from medsynth.evaluation import metrics, recipes, report, segmenter
from medsynth.evaluation.conditions import condition_fidelity
from medsynth.evaluation.domain_gap import domain_gap
from medsynth.evaluation.fidelity import SECOND_SPACE, fidelity
from medsynth.evaluation.studies import StudySet
from medsynth.outputs import atomic_output_dir, check_output_dir
from medsynth.progress import progress_iter, stage
from medsynth.runs import SetFolder
from medsynth.runs.real import load_real
from medsynth.runs.synthset import open_with_run, studies_on_grid
from medsynth.runtime import resolve_device

MIN_HOLDOUT = 4


@dataclass
class EvaluateResult:
    out: Path
    summary: dict          # the headline figures (also report.json "summary")
    seconds: float
    files: list[str] = field(default_factory=list)


def class_ids(loaded, values: list[str], where: str) -> np.ndarray | None:
    """Class ids of class names, refusing a name the run does not know."""
    ids = loaded.spec.class_ids(values, where)
    return None if ids is None else ids.numpy()


def load_sets(loaded, sset, masked: bool, show_progress: bool) -> tuple[StudySet, StudySet, StudySet]:
    train, holdout = load_real(loaded, masked, show_progress, min_holdout=MIN_HOLDOUT, purpose="evaluation")
    real = [StudySet(v.images.numpy(), v.labels, class_ids(loaded, v.classes, "the run's catalog"), v.conditions)
            for v in (train, holdout)]
    images, labels = [], []
    for row, study, unit in studies_on_grid(sset, loaded, "evaluate"):
        images.append(unit.astype(np.float32))
        if masked:
            if study.label is None:
                raise MedsynthError(f"synthetic study {row['study_id']} has no label map but the run is mask-conditioned; "
                                    "evaluate the set exactly as `medsynth generate` wrote it.")
            labels.append(loaded.spec.compact(study.label))   # files hold the dataset's ids, models the run's
    classes = class_ids(loaded, sset.table["class"].astype(str).tolist(), SetFolder(sset.folder).table.name)
    synthetic = StudySet(np.stack(images), np.stack(labels) if masked else None, classes,
                         {c.name: sset.table[c.name].tolist() for c in loaded.extras if c.name in sset.table.columns})
    return real[0], real[1], synthetic


def regions(study: StudySet, label_names: dict[int, str], class_names: list[str]) -> dict[str, np.ndarray]:
    """Pooled first-channel intensities per label region (mask runs), else per class and over all studies."""
    x = study.images[:, 0]
    out = {"all studies": x.ravel()}
    if study.labels is not None:
        for value, name in label_names.items():
            out[f"label {name}"] = x[study.labels == value]
    if study.classes is not None:
        for c, name in enumerate(class_names):
            out[f"class {name}"] = x[study.classes == c].ravel()
    return out


def intensities(train: StudySet, holdout: StudySet, synthetic: StudySet, loaded, seed: int) -> dict:
    names = loaded.label_names()
    if synthetic.labels is not None and not names:
        names = {v: str(v) for v in range(loaded.num_labels)}
    parts = [regions(v, names, loaded.class_names) for v in (train, holdout, synthetic)]
    return {r: {"wasserstein_synthetic": metrics.intensity_distance(parts[2][r], parts[1][r], seed=seed),
                "wasserstein_real": metrics.intensity_distance(parts[0][r], parts[1][r], seed=seed),
                "synthetic_mean": float(parts[2][r].mean()) if parts[2][r].size else None,
                "holdout_mean": float(parts[1][r].mean()) if parts[1][r].size else None}
            for r in parts[1]}


def diversity(train: StudySet, holdout: StudySet, synthetic: StudySet, names: list[str], s: EvaluateConfig) -> dict:
    real_images = np.concatenate([train.images, holdout.images])
    real_classes = None if train.classes is None else np.concatenate([train.classes, holdout.classes])
    groups = {"all": (np.ones(len(synthetic.images), bool), np.ones(len(real_images), bool))}
    if synthetic.classes is not None:
        groups.update({n: (synthetic.classes == c, real_classes == c) for c, n in enumerate(names)})
    out = {}
    for group, (syn_mask, real_mask) in groups.items():
        if syn_mask.sum() < 2 or real_mask.sum() < 2:
            continue
        out[group] = {"synthetic": metrics.mean_interval(metrics.pairwise_ms_ssim(synthetic.images[syn_mask], s.pairs, s.seed), (0, 1)),
                      "real": metrics.mean_interval(metrics.pairwise_ms_ssim(real_images[real_mask], s.pairs, s.seed), (0, 1))}
    return out


def fit_each(sets: dict[str, tuple[np.ndarray, np.ndarray]], s: EvaluateConfig, fit, predict, holdout: np.ndarray,
             description: str, show_progress: bool) -> tuple[dict[str, list[np.ndarray]], object]:
    """Train `fit(x, y, seed)` on every set for every seed (without utility: only the real-only model of seed 0) and
    `predict(model, holdout)`. Returns each set's holdout predictions, one per seed, and the judge: the real-only model
    of seed 0, whose holdout predictions are the first of "real only"."""
    runs = [(name, seed) for name in sets for seed in range(s.seeds if s.utility else 1) if s.utility or name == "real only"]
    predictions, judge = {name: [] for name in sets}, None
    for name, seed in progress_iter(runs, description, enabled=show_progress):
        model = fit(*sets[name], s.seed + seed)
        if judge is None:
            judge = model
        predictions[name].append(predict(model, holdout))
    return predictions, judge


def classification(train: StudySet, holdout: StudySet, synthetic: StudySet, names: list[str], s: EvaluateConfig,
                   show_progress: bool) -> tuple[dict, dict | None]:
    """Conditioning fidelity (judge = the real-only model of seed 0) and utility, for class-conditioned runs."""
    k = len(names)
    mixed_x, mixed_y, rare, added = recipes.boosted(train, synthetic, s.boost)
    sets = {"real only": (train.images, train.classes), "synthetic only": (synthetic.images, synthetic.classes),
            f"real + {added} synthetic {names[rare]}": (mixed_x, mixed_y)}
    predictions, judge = fit_each(
        sets, s, lambda x, y, seed: cls.train_classifier(x, y, k, seed=seed, steps=s.steps, batch_size=16),
        cls.probabilities, holdout.images, "evaluation classifiers", show_progress)
    syn_pred, _ = cls.predict(judge, synthetic.images)
    hold_pred = predictions["real only"][0].argmax(1)
    syn_recall = metrics.recall_per_class(syn_pred, synthetic.classes, k)
    hold_recall = metrics.recall_per_class(hold_pred, holdout.classes, k)
    conditioning = {"judge": "MONAI Classifier trained on the run's training studies",
                    "classes": {n: {"synthetic": None if np.isnan(syn_recall[c]) else float(syn_recall[c]),
                                    "holdout": None if np.isnan(hold_recall[c]) else float(hold_recall[c]),
                                    "synthetic_studies": int((synthetic.classes == c).sum())} for c, n in enumerate(names)}}
    if not s.utility:
        return conditioning, None
    scored = {name: np.array([recipes.scores_on(probs, holdout.classes, rare, k) for probs in runs]).reshape(-1, 3)
              for name, runs in predictions.items()}   # per seed: rare recall, balanced accuracy, rare ROC AUC
    keys = ["balanced_accuracy", f"recall_{names[rare]}", f"auc_{names[rare]}"]
    utility = {"model": "MONAI Classifier", "test": "real holdout", "rare_class": names[rare], "seeds": s.seeds,
               "metrics": keys,
               "sets": {name: {key: metrics.mean_interval(v[:, column], bounds=(0, 1))
                               for key, column in zip(keys, (1, 0, 2))} for name, v in scored.items()}}
    return conditioning, utility


def segmentation(train: StudySet, holdout: StudySet, synthetic: StudySet, loaded, s: EvaluateConfig,
                 show_progress: bool, cache: dict | None = None) -> tuple[dict, dict | None]:
    """Conditioning fidelity (Dice of a real-trained segmenter against the conditioning mask) and utility. Each
    model's mean holdout Dice goes into `cache` (recipes.segmenter_key), so the recipe family, whose steps UNet is
    this one, does not train it again."""
    labels = loaded.num_labels - 1   # the run's num_labels counts background (label ids 0..num_labels-1)
    names = {k: v for k, v in loaded.label_names().items() if k > 0} or {v: str(v) for v in range(1, labels + 1)}
    sets = {"real only": (train.images, train.labels), "synthetic only": (synthetic.images, synthetic.labels),
            "real + synthetic": (np.concatenate([train.images, synthetic.images]),
                                 np.concatenate([train.labels, synthetic.labels]))}
    predictions, judge = fit_each(
        sets, s, lambda x, y, seed: segmenter.train_segmenter(x, y, labels, steps=s.steps, seed=seed,
                                                              batch_size=recipes.SEGMENT_BATCH),
        segmenter.segment, holdout.images, "evaluation segmenters", show_progress)
    dice = {name: [segmenter.dice_per_label(p, holdout.labels, labels) for p in preds] for name, preds in predictions.items()}
    if cache is not None:
        held = recipes.fingerprint(holdout.images, holdout.labels)
        for name, per_seed in dice.items():
            data = recipes.fingerprint(*sets[name])
            for seed, d in enumerate(per_seed):
                key = recipes.segmenter_key("unet", s.steps, s.seed + seed, data, held)
                cache[key] = segmenter.mean_dice(d)
    syn_dice = segmenter.dice_per_label(segmenter.segment(judge, synthetic.images), synthetic.labels, labels)
    hold_dice = dice["real only"][0]
    conditioning = {"judge": "MONAI UNet trained on the run's training studies",
                    "labels": {names.get(v, str(v)): {"synthetic": metrics.mean_interval(syn_dice[:, v - 1], bounds=(0, 1)),
                                                      "holdout": metrics.mean_interval(hold_dice[:, v - 1], bounds=(0, 1))}
                               for v in range(1, labels + 1)},
                    "mean_dice_synthetic": float(np.nanmean(syn_dice)), "mean_dice_holdout": float(np.nanmean(hold_dice))}
    if not s.utility:
        return conditioning, None
    utility = {"model": "MONAI UNet", "test": "real holdout", "seeds": s.seeds, "metrics": ["mean_dice"],
               "sets": {name: {"mean_dice": metrics.mean_interval([segmenter.mean_dice(d) for d in per_seed],
                                                                  bounds=(0, 1))}
                        for name, per_seed in dice.items()}}
    return conditioning, utility


def utility_family(train, holdout, synthetic, loaded, s: EvaluateConfig, show_progress: bool,
                   trained: dict | None = None) -> dict:
    """The recipe family (evaluation/recipes.py) for each kind of conditioning the run has, and for class runs whether
    each of its networks can tell the synthetic studies from real ones (domain_gap.py); `trained`: the segmenters'
    Dice already measured (see `segmentation`)."""
    stage(f"evaluate: utility over the recipe family ({s.seeds} seeds per recipe and set)", show_progress)
    family = {}
    if loaded.class_names and synthetic.classes is not None:
        family["class"] = recipes.classification_family(train, holdout, synthetic, loaded.class_names, s, show_progress)
        family["class"]["domain_gap"] = domain_gap(train, holdout, synthetic, loaded.class_names,
                                                   list(recipes.FAMILY_NETWORKS), s.seeds, s.steps, s.seed, show_progress)
    if loaded.num_labels:
        family["mask"] = recipes.segmentation_family(train, holdout, synthetic, loaded.num_labels - 1, s, show_progress,
                                                     cache=trained)
    return family


def mean_or_none(values: list) -> float | None:
    return float(np.mean(values)) if values and all(v is not None for v in values) else None


def plane_mean_interval(planes: list[dict]) -> list[float | None]:
    """95% interval of the Frechet ratio's mean over planes: every plane's resamples drew the same synthetic studies,
    so the k-th resamples are averaged together and their spread taken around the mean of the planes' ratios."""
    rows = [p.get("frechet_ratio_resamples") or [] for p in planes]
    if not rows or not all(len(r) == len(rows[0]) for r in rows):
        return [None, None]
    value = mean_or_none([p.get("frechet_ratio") for p in planes])
    return metrics.spread_interval(value, np.mean(np.array(rows, np.float64), axis=0))[1]


def headline(payload: dict) -> dict:
    fid = payload["fidelity"]
    summary = {"frechet_synthetic": float(np.mean([p["frechet_synthetic"] for p in fid.values()])),
               "frechet_real": float(np.mean([p["frechet_real"] for p in fid.values()])),
               **{f"frechet_ratio{suffix}": mean_or_none([get(p)["frechet_ratio"] for p in fid.values()])
                  for suffix, get in (("", lambda p: p), ("_second", lambda p: p["second"]))},
               **{f"frechet_ratio{suffix}_interval": plane_mean_interval([get(p) for p in fid.values()])
                  for suffix, get in (("", lambda p: p), ("_second", lambda p: p["second"]))},
               "ms_ssim_synthetic": payload["diversity"].get("all", {}).get("synthetic", {}).get("mean"),
               "ms_ssim_real": payload["diversity"].get("all", {}).get("real", {}).get("mean")}
    cond = payload["conditioning"]
    if "class" in cond:
        values = [(c["synthetic"], c["holdout"]) for c in cond["class"]["classes"].values() if c["synthetic"] is not None]
        summary["class_accuracy_synthetic"] = float(np.mean([v[0] for v in values])) if values else None
        summary["class_accuracy_holdout"] = float(np.nanmean([np.nan if v[1] is None else v[1] for v in values])) if values else None
    if "mask" in cond:
        summary["dice_synthetic"] = cond["mask"]["mean_dice_synthetic"]
        summary["dice_holdout"] = cond["mask"]["mean_dice_holdout"]
    for util in payload["utility"].values():
        first = util["metrics"][0]
        summary[f"utility_{first}"] = {name: d[first]["mean"] for name, d in util["sets"].items()}
    for kind, family in payload.get("utility_family", {}).items():
        summary[f"recipes_verdict_{kind}"] = family["verdict"]   # helps / neutral / hurts over every recipe
        if "auc_verdict" in family:
            summary[f"recipes_auc_verdict_{kind}"] = family["auc_verdict"]   # the same in the rare class's ROC AUC
        if "matched_verdict" in family:   # the same in recall at the real-only models' specificity
            summary[f"recipes_matched_verdict_{kind}"] = family["matched_verdict"]
    return summary


def evaluate(run: str | Path, synth: str | Path, out: str | Path, settings: EvaluateConfig | None = None, *,
             device: str = "auto", overwrite: bool = False, show_progress: bool = True) -> EvaluateResult:
    """Evaluate `synth` (made by `run`) against the run's real studies; write DIR (report.html, report.json) atomically."""
    with warnings.catch_warnings():
        # a label absent from every study of a set gives NaN Dice, reported as such (null in report.json)
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        return _evaluate(run, synth, out, settings or EvaluateConfig(), device, overwrite, show_progress)


def _evaluate(run, synth, out, s: EvaluateConfig, device: str, overwrite: bool, show_progress: bool) -> EvaluateResult:
    start = time.monotonic()
    check_output_dir(out, overwrite)
    loaded, sset = open_with_run(run, synth, resolve_device(device), "evaluate")
    judged = sset.file_hashes()
    masked = loaded.num_labels > 0
    names = loaded.class_names
    train, holdout, synthetic = load_sets(loaded, sset, masked, show_progress)
    if len(synthetic.images) < 2:
        raise MedsynthError("the synthetic set has fewer than 2 studies; generate more to compare sets (--n).")

    payload = {"modality": loaded.meta["modality"], "grid": list(loaded.meta["shape"]),
               "studies": {"train": len(train.images), "holdout": len(holdout.images), "synthetic": len(synthetic.images)},
               "feature_space": f"SimCLR encoder (MONAI Classifier trunk, 64-d) trained {s.encoder_steps} steps on the "
                                "run's training studies" + (f", one per plane on {s.slices} slices per study"
                                                            if train.images.ndim == 5 else "")
                                + "; features standardised on the training slices",
               "feature_space_second": SECOND_SPACE, "class_names": list(loaded.class_names)}
    stage(f"evaluate: fidelity in a feature encoder trained on {len(train.images)} training studies", show_progress)
    payload["fidelity"] = fidelity(train, holdout, synthetic, s, show_progress)
    payload["intensity"] = intensities(train, holdout, synthetic, loaded, s.seed)
    payload["diversity"] = diversity(train, holdout, synthetic, names, s)
    payload["conditioning"], payload["utility"], trained = {}, {}, {}
    stage("evaluate: conditioning" + (f" and utility ({s.seeds} seeds per training set)" if s.utility else ""),
          show_progress)
    if names and synthetic.classes is not None:
        payload["conditioning"]["class"], payload["utility"]["class"] = classification(
            train, holdout, synthetic, names, s, show_progress)
    if masked:
        payload["conditioning"]["mask"], payload["utility"]["mask"] = segmentation(
            train, holdout, synthetic, loaded, s, show_progress, trained)
    if loaded.extras:
        payload["conditioning"]["conditions"] = condition_fidelity(loaded.extras, train, holdout, synthetic, s)
    payload["utility"] = {k: v for k, v in payload["utility"].items() if v}
    if s.family and s.utility:
        payload["utility_family"] = utility_family(train, holdout, synthetic, loaded, s, show_progress, trained)
    payload["summary"] = headline(payload)
    payload["judged_files"] = judged
    payload["provenance"] = provenance.record("evaluation", as_dict(s), {
        "run": loaded.path.name, "run_hash": loaded.run_hash, "synthetic_set": sset.folder.name,
        "samples_sha256": sset.table_sha256}, seeds={"evaluation": s.seed})
    with atomic_output_dir(out, overwrite) as tmp:
        provenance.write_json(tmp / "report.json", payload)
        report.write_html(tmp / "report.html", payload, train, holdout, synthetic, names)
    return EvaluateResult(Path(out).expanduser().resolve(), payload["summary"], time.monotonic() - start,
                          ["report.json", "report.html"])
