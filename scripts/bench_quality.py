"""Quality of class-conditioned synthetic data on a MedMNIST-style .npz (e.g. BreastMNIST), end to end on CPU.

Trains medsynth with --config on the file's official train split, generates --n-per-class studies per class (and
--boost of the rare class), then judges them with a MONAI classifier trained on the real train split:
  - conditioning: share of synthetic studies classified as their requested class, next to real test;
  - fidelity: Frechet distance in the classifier's 32-d feature space (standardised on real train features) (synthetic vs real test, and real
    val vs real test as the floor); share of synthetic images noisier (Laplacian SD) than 99% of real ones;
  - utility over --seeds: a classifier trained for the same --utility-steps on real only, synthetic only, real +
    --boost synthetic studies of the rare class, and (control) real with its rare-class studies repeated to the same
    count, tested on real test: balanced accuracy and rare-class recall, mean and 95% interval over seeds. The control
    separates what the synthetic images add from what re-weighting or oversampling the rare class alone does.
With a folder of 3D studies with label maps (e.g. the MSD hippocampus set) it measures the mask-conditioned path
through `medsynth evaluate`: a MONAI UNet trained on the run's real training studies segments the synthetic images;
its Dice against the conditioning masks is compared with its Dice on real holdout (target >= 0.8x), next to the
Frechet distance per plane, MS-SSIM diversity and the real / synthetic / real + synthetic utility.

With --family (#23), the downstream recipe family (evaluation/recipes.py) at two training budgets (--budgets steps):
the synthetic set as generated or curated (at each of --curate-quantiles) is chosen on the val split, then every
figure is measured on test.

Prints every figure and the CPU minutes used. Targets: docs/benchmarks.md (evaluation issue).

    python scripts/bench_quality.py --data ../shared/data/breastmnist/breastmnist.npz
    python scripts/bench_quality.py --data ../shared/data/breastmnist/breastmnist.npz --family --seeds 5 --boost 600 --out W
    python scripts/bench_quality.py --data ../shared/data/hippocampus --config hippocampus_3d_mask.yaml --n 100
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medsynth.data.catalog import ref_from_row
from medsynth.data.ingest import ingest
from medsynth.data.preprocess import PreprocessSpec, preprocess
from medsynth.data.readers import load_study
from medsynth.evaluation.classifier import predict, train_classifier
from medsynth.config import EvaluateConfig, load_config
from medsynth.evaluation import recipes
from medsynth.evaluation.curate import nearest_correlation, plausibility
from medsynth.evaluation.evaluate import StudySet, evaluate, fidelity
from medsynth import provenance
from medsynth.errors import MedsynthError
from medsynth.evaluation.metrics import balanced_accuracy, frechet_distance, noise_level, recall_per_class
from medsynth.synthesis.generate import generate
from medsynth.runs import SetFolder
from medsynth.runs.loaded import load_run
from medsynth.runtime import resolve_device
from medsynth.training.trainer import train


def real_arrays(catalog: pd.DataFrame, cfg) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Model-grid images in [-1, 1] and class ids for each official split (train / val / test)."""
    spec = PreprocessSpec.from_config(cfg.data)
    out = {}
    for split, rows in catalog.groupby("source_split"):
        images = np.stack([preprocess(load_study(ref_from_row(r)), spec).image.numpy() for _, r in rows.iterrows()])
        out[split] = (images, rows["class"].astype(int).to_numpy())
    return out


def synthetic_arrays(folder: Path, run, ids: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images in model units and class ids; `ids` maps the set's class names to the data file's ids (a run trained
    on a catalog ingested with --class-names calls its classes by name), else the names are the ids."""
    table = pd.read_csv(SetFolder(folder).table, dtype={"class": str})
    images = np.stack([run.intensity.to_unit(np.asarray(nib.load(folder / f).dataobj, np.float32)[None])
                       for f in table["image"]])
    return images, np.array([int(c) if c.isdigit() else (ids or {})[c] for c in table["class"]])


def utility(train_x, train_y, test_x, test_y, classes, rare, seeds, steps) -> tuple[np.ndarray, np.ndarray]:
    """(balanced accuracy, rare-class recall) on test: mean and 95% interval half-width over `seeds` classifiers, each
    trained for `steps` batches whatever the set's size."""
    scores = []
    for seed in range(seeds):
        predicted, _ = predict(train_classifier(train_x, train_y, classes, seed=seed, steps=steps), test_x)
        scores.append((balanced_accuracy(predicted, test_y, classes), recall_per_class(predicted, test_y, classes)[rare]))
    scores = np.array(scores)
    return scores.mean(0), 1.96 * scores.std(0, ddof=1) / np.sqrt(seeds) if seeds > 1 else np.zeros(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="MedMNIST-style .npz with train/val/test splits")
    parser.add_argument("--config", help="default: breastmnist_2d_class.yaml for .npz data, hippocampus_3d_mask.yaml "
                        "for a folder with label maps")
    parser.add_argument("--set", action="append", default=[], help="config override section.key=value")
    parser.add_argument("--run", help="reuse a finished run instead of training")
    parser.add_argument("--n-per-class", type=int, default=200)
    parser.add_argument("--n", type=int, default=100, help="synthetic studies for the mask-conditioned benchmark")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each segmenter (mask benchmark)")
    parser.add_argument("--guidance", type=float, help="override the config's guidance scale for generation")
    parser.add_argument("--boost", type=int, default=1000, help="synthetic rare-class studies added to real data "
                        "for the real + synthetic utility set (class benchmark)")
    parser.add_argument("--boost-guidance", type=float, help="guidance for the boost studies (default: --guidance); "
                        "lower guidance trades recognisability for diversity")
    parser.add_argument("--utility-steps", type=int, default=800, help="training batches of every utility classifier "
                        "(800: the best real-only classifier of 400 / 800 / 1600)")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--family", action="store_true", help="#23: the downstream recipe family at each of --budgets, "
                        "the synthetic set (as generated or curated) chosen on val and scored on test")
    parser.add_argument("--budgets", type=int, nargs="+", default=[600, 2400], help="training steps per operating "
                        "point (--family); 600 and 2400 are about 17 and 68 CPU-minutes on a 2-core x86 machine")
    parser.add_argument("--class-names", help="names of the data file's class ids, e.g. 0=malignant,1=benign, for runs "
                        "trained on a catalog ingested with --class-names (--family)")
    parser.add_argument("--boost-other", type=int, default=400, help="studies of each other class in the family set")
    parser.add_argument("--curate-quantiles", type=float, nargs="+", default=[0.1], metavar="Q",
                        help="family: curation candidates (plausibility quantiles, as `medsynth curate --quantile`; "
                        "0.5 keeps what is as typical as the median real val study), chosen on val")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="keep the run and synthetic set here")
    args = parser.parse_args()
    if any(not 0 <= q < 1 for q in args.curate_quantiles):
        parser.error(f"--curate-quantiles must each be at least 0 and below 1, got {args.curate_quantiles}.")
    start, device = time.time(), resolve_device(args.device)
    if not args.data.endswith(".npz"):
        return mask_bench(args, start, device)
    if args.family:
        return family_bench(args, start, device)
    args.config = args.config or "breastmnist_2d_class.yaml"
    cfg = load_config(args.config, args.set)
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_quality-"))
    work.mkdir(parents=True, exist_ok=True)
    catalog = ingest(args.data, work / "catalog", overwrite=True, show_progress=False).catalog
    run_dir = Path(args.run) if args.run else work / "run"
    if not args.run:
        train(cfg, work / "catalog", run_dir, device=str(device), overwrite=True, show_progress=False)
    train_minutes = (time.time() - start) / 60
    run = load_run(run_dir, device)
    names = run.class_names
    real = real_arrays(catalog, cfg)
    classes = len(names)
    counts = np.bincount(real["train"][1], minlength=classes)
    rare = int(np.argmin(counts))
    guidance = args.guidance if args.guidance is not None else run.cfg.diffusion.guidance
    boost_guidance = args.boost_guidance if args.boost_guidance is not None else guidance
    together = boost_guidance == guidance  # one set serves both, its rare class topped up to --boost
    wanted = [max(args.n_per_class, args.boost) if c == rare and together else args.n_per_class for c in range(classes)]
    generate(run_dir, work / "synthetic", classes=[f"{c}={n}" for c, n in zip(names, wanted)], device=str(device),
             guidance=guidance, overwrite=True, show_progress=False)
    syn_x, syn_y = synthetic_arrays(work / "synthetic", run)
    if together:
        boost_x = syn_x[syn_y == rare][: args.boost]
    else:
        generate(run_dir, work / "synthetic_boost", classes=[f"{names[rare]}={args.boost}"], device=str(device),
                 guidance=boost_guidance, overwrite=True, show_progress=False)
        boost_x = synthetic_arrays(work / "synthetic_boost", run)[0]
    judged = np.concatenate([np.flatnonzero(syn_y == c)[: args.n_per_class] for c in range(classes)])
    syn_x, syn_y = syn_x[judged], syn_y[judged]  # n-per-class of each class: the judged (and synthetic-only) set

    judge = train_classifier(*real["train"], classes, seed=0)
    _, train_feat = predict(judge, real["train"][0])
    scale = lambda f: (f - train_feat.mean(0)) / (train_feat.std(0) + 1e-6)  # noqa: E731  features in SD units
    test_pred, test_feat = predict(judge, real["test"][0])
    _, val_feat = predict(judge, real["val"][0])
    syn_pred, syn_feat = predict(judge, syn_x)
    test_feat, val_feat, syn_feat = scale(test_feat), scale(val_feat), scale(syn_feat)
    real_recall = recall_per_class(test_pred, real["test"][1], classes)
    syn_recall = recall_per_class(syn_pred, syn_y, classes)
    noisy = (noise_level(syn_x) > np.percentile(noise_level(real["train"][0]), 99)).mean()

    real_x, real_y = real["train"]
    repeats = np.resize(np.flatnonzero(real_y == rare), len(boost_x))  # the control: real rare-class studies repeated
    sets = {
        "real only": (real_x, real_y),
        "synthetic only": (syn_x, syn_y),
        f"real + {len(boost_x)} synthetic class-{rare}": (np.concatenate([real_x, boost_x]),
                                                          np.concatenate([real_y, np.full(len(boost_x), rare)])),
        f"real + {len(boost_x)} repeated real class-{rare}": (np.concatenate([real_x, real_x[repeats]]),
                                                              np.concatenate([real_y, real_y[repeats]])),
    }
    rows = {name: utility(*xy, *real["test"], classes, rare, args.seeds, args.utility_steps) for name, xy in sets.items()}
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(f"data {args.data}: train {len(real['train'][1])} (class counts {counts.tolist()}), val {len(real['val'][1])}, "
          f"test {len(real['test'][1])}; rare class {rare}; config {args.config} {args.set}")
    print(f"training + data prep: {train_minutes:.1f} wall minutes; run {run_dir}; guidance {guidance} "
          f"(boost studies: {boost_guidance})")
    for c in range(classes):
        print(f"class {names[c]}: classified as requested - synthetic {syn_recall[c]:.2f} ({args.n_per_class} studies), "
              f"real test {real_recall[c]:.2f}")
    fd_syn, fd_real = frechet_distance(syn_feat, test_feat), frechet_distance(val_feat, test_feat)
    print(f"Frechet distance (classifier features, 32-d, standardised on real train): synthetic vs test {fd_syn:.3f}; "
          f"real val vs test {fd_real:.3f}; ratio {fd_syn / fd_real:.2f}")
    print(f"synthetic images noisier than 99% of real train images: {100 * noisy:.0f}%")
    print(f"utility on real test, {args.seeds} seeds x {args.utility_steps} steps (mean +- 95% interval): balanced "
          f"accuracy / class-{rare} recall")
    for name, (mean, half) in rows.items():
        print(f"  {name:36s} {mean[0]:.3f} +- {half[0]:.3f}   {mean[1]:.3f} +- {half[1]:.3f}")
    print(f"total: {(time.time() - start) / 60:.1f} wall minutes, {(cpu.ru_utime + cpu.ru_stime) / 60:.1f} CPU minutes")


def mask_bench(args, start: float, device) -> None:
    """Mask-conditioned 3D: train (or reuse --run), generate --n studies on training masks, `medsynth evaluate`."""
    cfg = load_config(args.config or "hippocampus_3d_mask.yaml", args.set)
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_quality-"))
    work.mkdir(parents=True, exist_ok=True)
    run_dir = Path(args.run) if args.run else work / "run"
    if not args.run:
        train(cfg, args.data, run_dir, device=str(device), overwrite=True, show_progress=True)
    train_minutes = (time.time() - start) / 60
    synthetic = work / "synthetic"
    if not SetFolder(synthetic).table.is_file():
        generate(run_dir, synthetic, n=args.n, device=str(device), guidance=args.guidance, overwrite=True,
                 show_progress=True)
    generate_minutes = (time.time() - start) / 60 - train_minutes
    result = evaluate(run_dir, synthetic, work / "evaluation",
                      EvaluateConfig(seeds=args.seeds, steps=args.steps, family=args.family),
                      device=str(device), overwrite=True, show_progress=True)
    report = json.loads((work / "evaluation" / "report.json").read_text())
    s, cond = result.summary, report["conditioning"]["mask"]
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(f"data {args.data}: train {report['studies']['train']}, holdout {report['studies']['holdout']}, synthetic "
          f"{report['studies']['synthetic']} on a {report['grid']} grid; run {run_dir}")
    print(f"training {train_minutes:.1f} wall min (0 when --run), generation {generate_minutes:.1f} wall min, "
          f"evaluation {result.seconds / 60:.1f} wall min")
    print(f"segmenter Dice against the mask (MONAI UNet, {args.steps} steps on real train): synthetic "
          f"{s['dice_synthetic']:.3f}, real holdout {s['dice_holdout']:.3f}, ratio {s['dice_synthetic'] / s['dice_holdout']:.2f} "
          "(target >= 0.8)")
    for name, d in cond["labels"].items():
        print(f"  label {name}: synthetic {d['synthetic']['mean']:.3f} ({d['synthetic']['interval'][0]:.3f}-"
              f"{d['synthetic']['interval'][1]:.3f}), holdout {d['holdout']['mean']:.3f}")
    for plane, d in report["fidelity"].items():
        print(f"Frechet distance {plane}: synthetic {d['frechet_synthetic']:.2f}, real train vs holdout {d['frechet_real']:.2f}; "
              f"KID {d['kid_synthetic']:.3f} vs {d['kid_real']:.3f}")
    print(f"MS-SSIM among pairs: synthetic {s['ms_ssim_synthetic']:.3f}, real {s['ms_ssim_real']:.3f}")
    util = report["utility"].get("mask")
    if util:
        for name, d in util["sets"].items():
            m = d["mean_dice"]
            print(f"utility, Dice on real holdout, {name:18s} {m['mean']:.3f} ({m['interval'][0]:.3f}-{m['interval'][1]:.3f}, "
                  f"{util['seeds']} seeds)")
    family = report.get("utility_family", {}).get("mask")
    if family:
        print_segmentation_family(family)
    print(f"total: {(time.time() - start) / 60:.1f} wall minutes, {(cpu.ru_utime + cpu.ru_stime) / 60:.1f} CPU minutes; "
          f"report {work / 'evaluation' / 'report.html'}")


def print_segmentation_family(family: dict) -> None:
    """Mean Dice on real holdout per recipe and training set, and the paired lift, as the family reports them."""
    print(f"recipe family ({family['seeds']} seeds; fixed epochs: {family['epochs']}; added: {family['added']}):")
    for recipe, row in family["recipes"].items():
        sets = ", ".join(f"{name} {d['mean_dice']['mean']:.3f}" for name, d in row.items() if name != "lift")
        low, high = row["lift"]["interval"]
        print(f"  {recipe:28s} {sets}; lift {row['lift']['mean']:+.3f} [{low:+.3f}, {high:+.3f}]")
    print(f"verdict over every segmentation recipe: {family['verdict']}")


# --- #23: the utility family at two CPU budgets, the synthetic variant chosen on val and confirmed on test ---------

def family_bench(args, start: float, device) -> None:
    """For each --budgets step count: train (or reuse WORK/run_<steps>), generate the judged set (--n-per-class per
    class at the config's guidance) and the family set (--boost rare-class and --boost-other other studies at
    --boost-guidance). On the first budget, choose between the family set as generated and curated (calibrated on val)
    by the MONAI Classifier recipes' mean rare-class recall lift on val; then at every budget score the chosen set on
    test: recognised as requested, Frechet distance and KID in two feature spaces as ratios to the real floor, and the
    whole recipe family (evaluation/recipes.py) over --seeds seeds. Writes WORK/family_<steps>.json (a rerun keeps it)."""
    cfg = load_config(args.config or "breastmnist_2d_class.yaml", args.set)
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_quality-"))
    work.mkdir(parents=True, exist_ok=True)
    catalog = ingest(args.data, work / "catalog_ids", overwrite=True, show_progress=False).catalog
    if not (work / "catalog" / "catalog.csv").is_file():   # the runs' catalog: classes called by their names
        ingest(args.data, work / "catalog", overwrite=True, show_progress=False, class_names=args.class_names)
    real = {k: StudySet(x, None, y) for k, (x, y) in real_arrays(catalog, cfg).items()}
    ids = {name: int(i) for i, _, name in (p.partition("=") for p in (args.class_names or "").split(",") if p)}
    names = [next((n for n, i in ids.items() if i == c), str(c)) for c in range(int(catalog["class"].astype(int).max()) + 1)]
    s = EvaluateConfig(seeds=args.seeds, steps=args.utility_steps, boost=args.boost)
    cache, choice = {}, None
    for steps in args.budgets:
        out = work / f"family_{steps}.json"
        if out.is_file():
            result = json.loads(out.read_text())
            choice = choice or result["choice"]
            print_budget(result)
            continue
        run_dir, seconds = budget_run(args, work, steps, device)
        run = load_run(run_dir, device)
        judged, family = budget_sets(run_dir, run, args, device, ids)
        if choice is None:
            choice = choose_variant(real, family, run, names, args, cache)
        quantile = choice.get("quantile", 0.1 if choice["variant"] == "curated" else None)   # older results: 0.1
        chosen = family if quantile is None else curated(real, family, run, names, quantile)[0]
        result = {"steps": steps, "train_seconds": seconds, "choice": choice, "studies": len(chosen.images),
                  "recognised": recognised(real, judged, len(names)), "class_names": names,
                  "fidelity": {"judged": fidelity(real["train"], real["test"], judged, s, False)["image"],
                               "chosen": fidelity(real["train"], real["test"], chosen, s, False)["image"]},
                  "family": recipes.classification_family(real["train"], real["test"], chosen, names, s, True,
                                                          cache=cache)}
        provenance.write_json(out, result)
        print_budget(result)
    print(f"total: {(time.time() - start) / 60:.1f} wall minutes")


def budget_run(args, work: Path, steps: int, device) -> tuple[Path, float]:
    """WORK/run_<steps>: the config trained for exactly `steps` steps (no time limit), reused when it finished;
    and its training seconds (metrics.csv)."""
    run_dir = work / f"run_{steps}"
    try:
        load_run(run_dir, device)
    except MedsynthError:
        cfg = load_config(args.config or "breastmnist_2d_class.yaml",
                          [*args.set, f"train.max_steps={steps}", "train.max_minutes=0"])
        train(cfg, work / "catalog", run_dir, device=str(device), overwrite=True, show_progress=True)
    return run_dir, float(pd.read_csv(run_dir / "metrics.csv")["elapsed_s"].iloc[-1])


def budget_sets(run_dir: Path, run, args, device, ids: dict) -> tuple[StudySet, StudySet]:
    """The judged set (n-per-class each class, the config's guidance) and the family set (boost studies of the rare
    class and boost-other of the others, at boost-guidance), generated once into the run's folder."""
    names, counts = run.class_names, np.array(run.meta["class_counts"])
    rare = int(np.argmin(counts))
    wanted = {"judged": ([f"{n}={args.n_per_class}" for n in names], None),
              "family": ([f"{n}={args.boost if c == rare else args.boost_other}" for c, n in enumerate(names)],
                         args.boost_guidance if args.boost_guidance is not None else 1.0)}
    sets = []
    for name, (classes, guidance) in wanted.items():
        folder = run_dir / f"bench_{name}"
        if not SetFolder(folder).table.is_file():
            generate(run_dir, folder, classes=classes, guidance=guidance, device=str(device), show_progress=True,
                     batch_size=50, overwrite=True)
        images, classes = synthetic_arrays(folder, run, ids)
        sets.append(StudySet(images, None, classes))
    return sets[0], sets[1]


def curated(real: dict, synthetic: StudySet, run, names: list[str], quantile: float = 0.1) -> tuple[StudySet, dict]:
    """`medsynth curate`'s two rules, calibrated on val only (test stays unseen): the near-copy limit is val's
    highest nearest-training correlation; plausibility, the `quantile` of val's own-class probabilities."""
    flips = tuple(run.cfg.train.flip_axes)
    limit = float(nearest_correlation(real["val"].images, real["train"].images, flips).max())
    near = nearest_correlation(synthetic.images, real["train"].images, flips)
    plausible, thresholds = plausibility(real["train"], real["val"], synthetic, quantile, 300, 0, names)
    keep = (near <= limit) & plausible
    record = {"quantile": quantile, "near_copy_limit": limit, "dropped_near_copy": int((near > limit).sum()),
              "dropped_implausible": int((~plausible).sum()), "kept": int(keep.sum()), "thresholds": thresholds,
              "nearest_median": {"kept": float(np.median(near[keep])), "dropped": float(np.median(near[~keep]))
                                 if (~keep).any() else None}}
    return StudySet(synthetic.images[keep], None, synthetic.classes[keep]), record


def choose_variant(real: dict, family: StudySet, run, names: list[str], args, cache: dict) -> dict:
    """As generated or curated at one of --curate-quantiles: the highest mean rare-class recall lift on val of the
    MONAI Classifier recipe (class-balanced, both mixes), --seeds seeds each. Test is not looked at."""
    s = EvaluateConfig(seeds=args.seeds, steps=args.utility_steps, boost=args.boost)
    candidates, records = {"as generated": family}, {}
    for q in args.curate_quantiles:   # one quantile keeps the old name, so older results read the same
        name = "curated" if args.curate_quantiles == [0.1] else f"curated q{q:g}"
        candidates[name], records[name] = curated(real, family, run, names, q)
    lifts, accuracy = {}, {}
    for variant, synthetic in candidates.items():
        result = recipes.classification_family(real["train"], real["val"], synthetic, names, s, True,
                                               only=("monai-classifier",), cache=cache,
                                               synthetic_only=False)
        lifts[variant] = {r: d["lift"] for r, d in result["recipes"].items()}
        accuracy[variant] = float(np.mean([d[mixed_set(r)]["balanced_accuracy"]["mean"]
                                           - d["real only"]["balanced_accuracy"]["mean"]
                                           for r, d in result["recipes"].items()]))
    means = {v: float(np.mean([d["mean"] for d in lifts[v].values()])) for v in lifts}
    fair = [v for v in means if accuracy[v] >= 0] or [max(accuracy, key=accuracy.get)]
    variant = max(fair, key=means.get)   # recall bought with false positives (balanced accuracy falls) is no gain
    print(f"chosen on val: {variant} (mean recall lift {means}; balanced-accuracy lift {accuracy})")
    return {"variant": variant, "quantile": records[variant]["quantile"] if variant in records else None,
            "mean_lift_val": means, "lifts_val": lifts, "curation": records.get(variant),
            "curation_candidates": records,
            "balanced_accuracy_lift_val": accuracy,
            "rule": "highest mean rare-class recall lift on val among the sets whose mean balanced-accuracy lift on val "
                    "is not below zero (else the highest balanced-accuracy lift), MONAI Classifier with class-balanced "
                    "loss, both mixes"}


def mixed_set(recipe: str) -> str:
    """The real + synthetic set's key in a family recipe's row: recipe "monai-classifier, balance" -> its mix."""
    return f"real + synthetic ({recipe.split(', ')[1]})"


def recognised(real: dict, judged: StudySet, classes: int) -> dict:
    """Share of judged synthetic studies a real-train classifier gives their requested class, next to real test."""
    judge = train_classifier(real["train"].images, real["train"].classes, classes, seed=0)
    test = recall_per_class(predict(judge, real["test"].images)[0], real["test"].classes, classes)
    syn = recall_per_class(predict(judge, judged.images)[0], judged.classes, classes)
    return {"synthetic": [float(v) for v in syn], "real_test": [float(v) for v in test]}


def print_budget(result: dict) -> None:
    fam, rec = result["family"], result["recognised"]
    print(f"\n== budget {result['steps']} steps ({result['train_seconds'] / 60:.1f} training minutes); set: "
          f"{result['choice']['variant']} ({result['studies']} studies)")
    print(f"recognised as requested: synthetic {rec['synthetic']}, real test {rec['real_test']}")
    for name, spaces in result["fidelity"].items():
        for space, d in (("encoder", spaces), ("second", spaces["second"])):
            print(f"Frechet {name:6s} {space:7s} {d['frechet_synthetic']:.2f} (floor {d['frechet_real']:.2f}, "
                  f"{d['frechet_ratio']:.2f}x); KID ratio {d['kid_ratio']}")
    print(f"recipe | real only | synthetic only | real + synthetic | lift [95%]  (rare-class recall; balanced accuracy)")
    for recipe, d in fam["recipes"].items():
        mix = mixed_set(recipe)
        cell = lambda k, m=fam["metric"]: f"{d[k][m]['mean']:.3f}/{d[k]['balanced_accuracy']['mean']:.3f}"  # noqa: E731
        lo, hi = d["lift"]["interval"]
        print(f"{recipe:36s} {cell('real only')} | {cell('synthetic only')} | {cell(mix)} | "
              f"{d['lift']['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    print(f"verdict: {fam['verdict']}")


if __name__ == "__main__":
    main()
