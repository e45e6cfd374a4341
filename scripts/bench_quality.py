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
the synthetic set (at each of --family-guidances, as generated or curated at each of --curate-quantiles, adding each
of --doses of every mix's count) is chosen on the val split, then every figure is measured on test. --test-seeds N on
a finished --out WORK scores each budget's chosen set on test again over N seeds (the choice made on val stands;
WORK/family_<steps>_seeds<N>.json).

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

import numpy as np

from medsynth.config import EvaluateConfig, load_config
from medsynth.data.ingest import ingest
from medsynth.evaluation import recipes
from medsynth.evaluation.classifier import predict, train_classifier
from medsynth.evaluation.evaluate import evaluate
from medsynth.evaluation.metrics import frechet_distance, noise_level, recall_per_class
from medsynth.pages import with_interval
from medsynth.runs import SetFolder
from medsynth.runs.loaded import load_run
from medsynth.runtime import resolve_device
from medsynth.synthesis.generate import generate
from medsynth.training.trainer import train
from quality_data import real_arrays, synthetic_arrays, utility
from quality_family import family_bench, signed


def arguments() -> argparse.Namespace:
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
    parser.add_argument("--test-seeds", type=int, help="family: score a finished --out's chosen set on test "
                        "again over this many seeds (the val choice stands)")
    parser.add_argument("--family-guidances", type=float, nargs="+", metavar="G", help="family: guidance candidates "
                        "for the family set, each generated and chosen on val with the curation candidates (default: "
                        "--boost-guidance, else 1.0)")
    parser.add_argument("--choose-by", choices=["auc", "recall"], default="auc", help="family: how the set is chosen "
                        "on val: the mean lift in the rare class's ROC AUC (session 25), or session 21's rule (recall "
                        "lift among sets that do not lower balanced accuracy)")
    parser.add_argument("--choose-recipes", nargs="+", default=["monai-classifier"], choices=list(recipes.CLASSIFIERS),
                        metavar="RECIPE", help="family: the downstream recipes (both mixes each) whose val lifts choose "
                        f"the set (default monai-classifier; any of {', '.join(recipes.CLASSIFIERS)})")
    parser.add_argument("--doses", type=float, nargs="+", metavar="D", help="family: how many synthetic studies to add, "
                        "as shares of each mix's count (1: up to class balance and --boost), each a candidate with "
                        "every guidance and curation candidate, chosen on val (default 1 only)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="keep the run and synthetic set here")
    args = parser.parse_args()
    if any(not 0 < d <= 1 for d in args.doses or []):
        parser.error(f"--doses must each be a share above 0 and at most 1, got {args.doses}.")
    if any(g < 0 for g in args.family_guidances or []):
        parser.error(f"--family-guidances must each be at least 0, got {args.family_guidances}.")
    if any(not 0 <= q < 1 for q in args.curate_quantiles):
        parser.error(f"--curate-quantiles must each be at least 0 and below 1, got {args.curate_quantiles}.")
    if args.test_seeds is not None and (args.test_seeds < 2 or not args.out):
        parser.error(f"--test-seeds needs at least 2 seeds (an interval) and the --out of a finished --family run, "
                     f"got {args.test_seeds} and --out {args.out}.")
    return args


def main() -> None:
    args = arguments()
    start, device = time.time(), resolve_device(args.device)
    if not args.data.endswith(".npz"):
        return mask_bench(args, start, device)
    if args.family:
        return family_bench(args, start, device)
    class_bench(args, start, device)


def class_bench(args, start: float, device) -> None:
    """The class-conditioned benchmark on a MedMNIST-style file (see the module's docstring)."""
    args.config = args.config or "breastmnist_2d_class.yaml"
    cfg = load_config(args.config, args.set)
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_quality-"))
    work.mkdir(parents=True, exist_ok=True)
    catalog = ingest(args.data, work / "catalog", overwrite=True, show_progress=False).catalog
    run_dir = Path(args.run) if args.run else work / "run"
    if not args.run:
        train(cfg, work / "catalog", run_dir, device=str(device), overwrite=True, show_progress=True)
    train_minutes = (time.time() - start) / 60
    run = load_run(run_dir, device)
    names = run.class_names
    real = real_arrays(catalog, cfg)
    classes = len(names)
    counts = np.bincount(real["train"][1], minlength=classes)
    rare = int(np.argmin(counts))
    guidance = args.guidance if args.guidance is not None else run.cfg.diffusion.guidance
    boost_guidance = args.boost_guidance if args.boost_guidance is not None else guidance
    syn_x, syn_y, boost_x = class_sets(args, run_dir, run, rare, guidance, boost_guidance, work, device)

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


def class_sets(args, run_dir: Path, run, rare: int, guidance: float, boost_guidance: float, work: Path, device):
    """The judged set (--n-per-class of each class) and the --boost rare-class studies; one generated set serves
    both when they share a guidance scale."""
    names = run.class_names
    classes = len(names)
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
    return syn_x, syn_y, boost_x


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
        print(f"Frechet distance {plane}: synthetic {d['frechet_synthetic']:.2f}, real train vs holdout {d['frechet_real']:.2f} "
              f"(ratio {with_interval(d['frechet_ratio'], d.get('frechet_ratio_interval'))}); "
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
        print(f"  {recipe:28s} {sets}; lift {signed(row['lift'])}")
    print(f"verdict over every segmentation recipe: {family['verdict']}")


if __name__ == "__main__":
    main()
