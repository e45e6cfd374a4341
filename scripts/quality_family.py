"""#23 for `bench_quality.py --family` on a MedMNIST-style file: the downstream recipe family
(evaluation/recipes.py) at each of --budgets training steps; the synthetic set (generated at each of --family-guidances,
as generated or curated at each of --curate-quantiles) chosen on the val split, then every figure measured on test."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medsynth import provenance
from medsynth.config import EvaluateConfig, load_config
from medsynth.data.ingest import ingest
from medsynth.errors import MedsynthError
from medsynth.evaluation import recipes
from medsynth.evaluation.classifier import predict, train_classifier
from medsynth.evaluation.curate import Plausibility, nearest_correlation, plausibility
from medsynth.evaluation.fidelity import fidelity
from medsynth.evaluation.studies import StudySet
from medsynth.evaluation.metrics import recall_per_class
from medsynth.pages import with_interval
from medsynth.runs import SetFolder
from medsynth.runs.loaded import load_run
from medsynth.synthesis.generate import generate
from medsynth.training.trainer import train
from quality_data import real_arrays, synthetic_arrays


def family_bench(args, start: float, device) -> None:
    """For each --budgets step count: train (or reuse WORK/run_<steps>), generate the judged set (--n-per-class per
    class at the config's guidance) and the family set (--boost rare-class and --boost-other other studies at
    each of --family-guidances). On the first budget, choose among the family sets as generated and curated
    (calibrated on val), each at every --doses, on val by --choose-by (choose_variant; the choice is written to
    WORK/family_choice.json at once, and a rerun with the same candidates reuses it); then at every budget score the
    chosen set on test: recognised as requested, Frechet distance and KID in two feature spaces as ratios to the real
    floor, and the whole recipe family (evaluation/recipes.py) over --seeds seeds. Writes WORK/family_<steps>.json
    (a rerun keeps it)."""
    cfg = load_config(args.config or "breastmnist_2d_class.yaml", args.set)
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_quality-"))
    work.mkdir(parents=True, exist_ok=True)
    catalog = ingest(args.data, work / "catalog_ids", overwrite=True, show_progress=False).catalog
    if not (work / "catalog" / "catalog.csv").is_file():   # the runs' catalog: classes called by their names
        ingest(args.data, work / "catalog", overwrite=True, show_progress=False, class_names=args.class_names)
    real = {k: StudySet(x, None, y) for k, (x, y) in real_arrays(catalog, cfg).items()}
    ids = {name: int(i) for i, _, name in (p.partition("=") for p in (args.class_names or "").split(",") if p)}
    names = [next((n for n, i in ids.items() if i == c), str(c)) for c in range(int(catalog["class"].astype(int).max()) + 1)]
    cache, choice = {}, saved_choice(work, args)
    for steps in args.budgets:
        out = work / f"family_{steps}.json"
        if args.test_seeds and out.is_file():
            rescored(args, work, steps, real, names, ids, device)
            continue
        if out.is_file():
            result = json.loads(out.read_text())
            choice = choice or result["choice"]
            print_budget(result)
            continue
        run_dir, seconds = budget_run(args, work, steps, device)
        run = load_run(run_dir, device)
        judged, families = budget_sets(run_dir, run, args, device, ids,
                                       guidances(args) if choice is None else [chosen_guidance(choice, args)])
        scores = {}   # this budget's run: the val phase's curation scores serve the chosen set too
        if choice is None:
            scores = {g: curation_scores(real, f, run, names) for g, f in families.items()}
            choice = choose_variant(real, families, scores, names, args, cache)
            provenance.write_json(work / "family_choice.json", choice)   # val's record, before test is looked at
        chosen = chosen_set(real, families, scores, run, names, choice, chosen_guidance(choice, args))
        s = settings(args, args.seeds, choice)
        result = {"steps": steps, "train_seconds": seconds, "choice": choice, "studies": len(chosen.images),
                  "guidance": chosen_guidance(choice, args),
                  "recognised": recognised(real, judged, len(names)), "class_names": names,
                  "fidelity": {"judged": fidelity(real["train"], real["test"], judged, s, False)["image"],
                               "chosen": fidelity(real["train"], real["test"], chosen, s, False)["image"]},
                  "family": recipes.classification_family(real["train"], real["test"], chosen, names, s, True,
                                                          cache=cache)}
        provenance.write_json(out, result)
        print_budget(result)
    print(f"total: {(time.time() - start) / 60:.1f} wall minutes")


def rescored(args, work: Path, steps: int, real: dict, names: list[str], ids: dict, device) -> None:
    """--test-seeds on a finished budget: its chosen set (rebuilt from the run's generated set and the recorded
    choice) scored on test again by the whole recipe family over more seeds; the choice, recognition and fidelity
    stand. Writes WORK/family_<steps>_seeds<N>.json (a rerun keeps it)."""
    out = work / f"family_{steps}_seeds{args.test_seeds}.json"
    if not out.is_file():
        result = json.loads((work / f"family_{steps}.json").read_text())
        run_dir = work / f"run_{steps}"
        run, guidance = load_run(run_dir, device), chosen_guidance(result["choice"], args)
        families = budget_sets(run_dir, run, args, device, ids, [guidance])[1]
        chosen = chosen_set(real, families, {}, run, names, result["choice"], guidance)
        s = settings(args, args.test_seeds, result["choice"])
        result["family"] = recipes.classification_family(real["train"], real["test"], chosen, names, s, True)
        result["rescored"] = {"seeds": args.test_seeds, "from": f"family_{steps}.json"}
        provenance.write_json(out, result)
    print_budget(json.loads(out.read_text()))


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


def settings(args, seeds: int, choice: dict) -> EvaluateConfig:
    """The family's downstream settings: --utility-steps, --boost, `seeds` seeds and the dose `choice` records
    (older results, which had none: 1)."""
    return EvaluateConfig(seeds=seeds, steps=args.utility_steps, boost=args.boost, dose=choice.get("dose", 1.0))


def guidances(args) -> list[float]:
    """The family set's guidance candidates: --family-guidances, else --boost-guidance, else 1.0."""
    return args.family_guidances or [args.boost_guidance if args.boost_guidance is not None else 1.0]


def chosen_guidance(choice: dict, args) -> float:
    """The guidance of the chosen family set (older results, which had one: the first candidate)."""
    return choice.get("guidance", guidances(args)[0])


def budget_sets(run_dir: Path, run, args, device, ids: dict, scales: list[float]) -> tuple[StudySet, dict]:
    """The judged set (n-per-class each class, the config's guidance) and a family set (boost studies of the rare
    class and boost-other of the others) at each guidance in `scales`, generated once into the run's folder."""
    names, counts = run.class_names, np.array(run.meta["class_counts"])
    rare = int(np.argmin(counts))
    wanted = {"bench_judged": ([f"{n}={args.n_per_class}" for n in names], None)}
    for g in scales:
        wanted[f"bench_family_g{g:g}"] = ([f"{n}={args.boost if c == rare else args.boost_other}"
                                           for c, n in enumerate(names)], g)
    sets = []
    for name, (classes, guidance) in wanted.items():
        folder = run_dir / name
        if not SetFolder(folder).table.is_file():
            generate(run_dir, folder, classes=classes, guidance=guidance, device=str(device), show_progress=True,
                     batch_size=50, overwrite=True)
        images, classes = synthetic_arrays(folder, run, ids)
        sets.append(StudySet(images, None, classes))
    return sets[0], dict(zip(scales, sets[1:]))


@dataclass
class CurationScores:
    """`medsynth curate`'s two measures of one synthetic set, calibrated on val only (test stays unseen): computed once
    (the plausibility classifier trains once), then cut at any quantile."""
    limit: float                 # the near-copy limit: val's highest nearest-training correlation
    near: np.ndarray             # (N,) each synthetic study's highest correlation with a training study
    judged: Plausibility         # own-class probabilities of val and synthetic studies


def curation_scores(real: dict, synthetic: StudySet, run, names: list[str]) -> CurationScores:
    flips = tuple(run.cfg.train.flip_axes)
    return CurationScores(float(nearest_correlation(real["val"].images, real["train"].images, flips).max()),
                          nearest_correlation(synthetic.images, real["train"].images, flips),
                          plausibility(real["train"], real["val"], synthetic, 300, 0, len(names)))


def curated(synthetic: StudySet, scores: CurationScores, names: list[str], quantile: float) -> tuple[StudySet, dict]:
    """The studies that pass both rules at `quantile`, and what was dropped and why."""
    plausible, thresholds = scores.judged.keep(quantile, names)
    near, limit = scores.near, scores.limit
    keep = (near <= limit) & plausible
    record = {"quantile": quantile, "near_copy_limit": limit, "dropped_near_copy": int((near > limit).sum()),
              "dropped_implausible": int((~plausible).sum()), "kept": int(keep.sum()), "thresholds": thresholds,
              "nearest_median": {"kept": float(np.median(near[keep])), "dropped": float(np.median(near[~keep]))
                                 if (~keep).any() else None}}
    return StudySet(synthetic.images[keep], None, synthetic.classes[keep]), record


def chosen_set(real: dict, families: dict[float, StudySet], scores: dict[float, CurationScores], run,
               names: list[str], choice: dict, guidance: float) -> StudySet:
    """The set `choice` names: the family set at `guidance`, curated at its quantile (older results: "curated" is
    0.1; its scores from `scores` when the val phase computed them on this run) or as generated."""
    family = families[guidance]
    quantile = choice.get("quantile", 0.1 if choice["variant"] == "curated" else None)
    if quantile is None:
        return family
    judged = scores[guidance] if guidance in scores else curation_scores(real, family, run, names)
    return curated(family, judged, names, quantile)[0]


def candidate_grid(gs: list[float], args) -> list[tuple[str, float, float | None, float]]:
    """Every candidate's (name, guidance, curation quantile or None, dose): at each guidance, as generated or curated
    at each of --curate-quantiles, at each of --doses. One guidance, quantile and dose keep the old names, so older
    results read the same."""
    doses, grid = args.doses or [1.0], []
    for g in gs:
        prefix = f"guidance {g:g}, " if len(gs) > 1 else ""
        variants = [(prefix + "as generated", None)] + [
            (prefix + ("curated" if args.curate_quantiles == [0.1] else f"curated q{q:g}"), q)
            for q in args.curate_quantiles]
        grid += [(name + (f", dose {d:g}" if doses != [1.0] else ""), g, q, d) for name, q in variants for d in doses]
    return grid


def candidate_sets(families: dict[float, StudySet], scores: dict[float, CurationScores], names: list[str],
                   args) -> tuple[dict[str, StudySet], dict[str, dict], dict[str, tuple[float, float]]]:
    """candidate_grid's sets: each candidate's set, its curation record, its (guidance, dose)."""
    candidates, records, at, made = {}, {}, {}, {}
    for name, g, q, d in candidate_grid(list(families), args):
        if (g, q) not in made:
            made[g, q] = (families[g], None) if q is None else curated(families[g], scores[g], names, q)
        candidates[name], at[name] = made[g, q][0], (g, d)
        if made[g, q][1] is not None:
            records[name] = made[g, q][1]
    return candidates, records, at


def saved_choice(work: Path, args) -> dict | None:
    """WORK/family_choice.json when a stopped run already made the val choice this command asks for (the same
    candidates, recipes, rule and seeds); else None (the val phase runs)."""
    path = work / "family_choice.json"
    if not path.is_file():
        return None
    choice = json.loads(path.read_text())
    same = (sorted(choice.get("auc_lift_val", {})) == sorted(n for n, *_ in candidate_grid(guidances(args), args))
            and choice.get("recipes") == list(args.choose_recipes) and choice.get("rule") == CHOICE_RULES[args.choose_by]
            and all(row["n"] == args.seeds for lifts in choice["lifts_val"].values() for row in lifts.values()))
    if same:
        print(f"val choice reused from {path}: {choice['variant']}")
    return choice if same else None


def choose_variant(real: dict, families: dict[float, StudySet], scores: dict[float, CurationScores],
                   names: list[str], args, cache: dict) -> dict:
    """Among candidate_sets, by the --choose-recipes (default the MONAI Classifier, class-balanced; both mixes,
    --seeds seeds) on val: the highest mean AUC lift (--choose-by auc) or session 21's recall rule (CHOICE_RULES).
    Test is not looked at."""
    candidates, records, at = candidate_sets(families, scores, names, args)
    lifts, accuracy, auc, aucs = {}, {}, {}, {}
    for variant, synthetic in candidates.items():
        s = settings(args, args.seeds, {"dose": at[variant][1]})
        result = recipes.classification_family(real["train"], real["val"], synthetic, names, s, True,
                                               only=tuple(args.choose_recipes), cache=cache,
                                               synthetic_only=False)
        lifts[variant] = {r: d["lift"] for r, d in result["recipes"].items()}
        accuracy[variant] = float(np.mean([d[mixed_set(r)]["balanced_accuracy"]["mean"]
                                           - d["real only"]["balanced_accuracy"]["mean"]
                                           for r, d in result["recipes"].items()]))
        aucs[variant] = {r: d["auc_lift"]["mean"] for r, d in result["recipes"].items()}
        auc[variant] = float(np.mean(list(aucs[variant].values())))
    means = {v: float(np.mean([d["mean"] for d in lifts[v].values()])) for v in lifts}
    if args.choose_by == "auc":
        variant = max(auc, key=auc.get)
    else:
        fair = [v for v in means if accuracy[v] >= 0] or [max(accuracy, key=accuracy.get)]
        variant = max(fair, key=means.get)   # recall bought with false positives (balanced accuracy falls) is no gain
    print(f"chosen on val by {args.choose_by}: {variant}\nval, per candidate: mean recall lift | balanced-accuracy "
          f"lift | AUC lift, mean and per recipe")
    for v in candidates:
        print(f"  {v:32s} {means[v]:+.3f} | {accuracy[v]:+.3f} | {auc[v]:+.3f} ("
              + ", ".join(f"{r} {a:+.3f}" for r, a in aucs[v].items()) + ")")
    return {"variant": variant, "guidance": at[variant][0], "dose": at[variant][1],
            "quantile": records[variant]["quantile"] if variant in records else None,
            "mean_lift_val": means, "lifts_val": lifts, "curation": records.get(variant),
            "curation_candidates": records, "balanced_accuracy_lift_val": accuracy, "auc_lift_val": auc,
            "auc_lifts_val": aucs, "rule": CHOICE_RULES[args.choose_by], "recipes": list(args.choose_recipes)}


CHOICE_RULES = {
    "auc": "highest mean lift in the rare class's ROC AUC on val over the recipes in 'recipes' (default the MONAI "
           "Classifier with class-balanced loss), both mixes (threshold-free, and it uses every pair of val studies, not "
           "only the rare ones)",
    "recall": "highest mean rare-class recall lift on val among the sets whose mean balanced-accuracy lift on val is not "
              "below zero (else the highest balanced-accuracy lift), over the recipes in 'recipes' (default the MONAI "
              "Classifier with class-balanced loss), both mixes"}


def mixed_set(recipe: str) -> str:
    """The real + synthetic set's key in a family recipe's row: recipe "monai-classifier, balance" -> its mix."""
    return f"real + synthetic ({recipe.split(', ')[1]})"


def recognised(real: dict, judged: StudySet, classes: int) -> dict:
    """Share of judged synthetic studies a real-train classifier gives their requested class, next to real test."""
    judge = train_classifier(real["train"].images, real["train"].classes, classes, seed=0)
    test = recall_per_class(predict(judge, real["test"].images)[0], real["test"].classes, classes)
    syn = recall_per_class(predict(judge, judged.images)[0], judged.classes, classes)
    return {"synthetic": [float(v) for v in syn], "real_test": [float(v) for v in test]}


def signed(d: dict) -> str:
    """A lift as "+0.123 [-0.010, +0.256]"."""
    lo, hi = d["interval"]
    return f"{d['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def print_budget(result: dict) -> None:
    fam, rec = result["family"], result["recognised"]
    print(f"\n== budget {result['steps']} steps ({result['train_seconds'] / 60:.1f} training minutes); set: "
          f"{result['choice']['variant']} ({result['studies']} studies, guidance {result.get('guidance', '?')}; added "
          f"{fam.get('added', '?')})")
    print(f"recognised as requested: synthetic {rec['synthetic']}, real test {rec['real_test']}")
    for name, spaces in result["fidelity"].items():
        for space, d in (("encoder", spaces), ("second", spaces["second"])):
            print(f"Frechet {name:6s} {space:7s} {d['frechet_synthetic']:.2f} (floor {d['frechet_real']:.2f}, "
                  f"{with_interval(d['frechet_ratio'], d.get('frechet_ratio_interval'))}x); KID ratio {d['kid_ratio']}")
    print("recipe | real only | synthetic only | real + synthetic | lift [95%] | at real only's specificity [95%] | "
          "AUC lift [95%]  (rare-class recall / balanced accuracy; the AUC is the rare class's against the rest)")
    for recipe, d in fam["recipes"].items():
        mix = mixed_set(recipe)
        cell = lambda k, m=fam["metric"]: (f"{d[k][m]['mean']:.3f}/{d[k]['balanced_accuracy']['mean']:.3f}"  # noqa: E731
                                           if k in d else "-")
        more = "".join(f" | {signed(d[k])}" for k in ("matched_lift", "auc_lift") if k in d)
        print(f"{recipe:36s} {cell('real only')} | {cell('synthetic only')} | {cell(mix)} | {signed(d['lift'])}{more}")
    print(f"verdict: {fam['verdict']}" + "".join(f"; {label}: {fam[k]}" for k, label in (
        ("matched_verdict", "at real only's specificity"), ("auc_verdict", "in rare-class AUC")) if k in fam))
