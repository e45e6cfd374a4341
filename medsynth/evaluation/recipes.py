"""Utility over a family of downstream recipes: does the synthetic set help a user's own model, whichever they run?

A recipe is a downstream model and how it trains: for classification a MONAI Classifier with and without a
class-balanced loss, at a fixed number of steps or a fixed number of epochs, and MONAI's resnet18 (at a quarter of its
width, for CPU cost); synthetic studies of the rare class join the real ones up to class balance or as a fixed count
(`boost`). For segmentation, MONAI UNet (at a fixed number of steps and at a fixed number of epochs) and SegResNet,
with all synthetic studies added or a fixed count (`boost`; 0: half the real training count). A dose below 1 adds that
share of each mix's count (how many synthetic studies to add is a choice to make on held-out data, like the
guidance). The lift of a recipe is the paired (same seed) difference between real + synthetic and real only in
rare-class recall (segmentation: mean Dice), with a t interval over seeds; next to it the lift in the rare class's ROC
AUC, which says whether the model tells the classes apart better or only calls the rare class more often (a
threshold-free view with its own verdict, `auc_verdict`, by the same rule); and the lift in rare-class recall at the
real-only model's specificity (`matched_lift`, `matched_verdict`): each model's recall read off its ROC curve where it
calls as few of the other classes rare as the real-only model of the same seed does, so that a recall gained by
calling the rare class more often (and paid for in false positives) does not count. The verdict is "helps" only when
every recipe's interval lies above zero, "hurts" when any lies below, else "neutral".
"""

from __future__ import annotations

import hashlib

import numpy as np

from medsynth.evaluation import classifier as cls
from medsynth.evaluation import metrics, segmenter
from medsynth.progress import progress_iter
from medsynth.stats import recall_at_specificity, roc_auc

CLASSIFIERS = {  # name -> (network, class-balanced loss, budget)
    "monai-classifier": ("classifier", True, "steps"),
    "monai-classifier-unweighted": ("classifier", False, "steps"),
    "monai-classifier-epochs": ("classifier", True, "epochs"),
    "resnet18-quarter": ("resnet18-quarter", True, "steps"),
}
FAMILY_NETWORKS = tuple(sorted({network for network, _, _ in CLASSIFIERS.values()}))   # each recipe network, once
SEGMENTERS = {  # name -> (network, budget)
    "monai-unet": ("unet", "steps"),
    "monai-segresnet": ("segresnet", "steps"),
    "monai-unet-epochs": ("unet", "epochs"),
}
SEGMENT_MIXES = ("all", "fixed")
SEGMENT_BATCH = 8
MIXES = ("balance", "fixed")
BATCH = 16


def lift(with_synthetic: list[float], real_only: list[float]) -> dict:
    """Mean paired difference (seed by seed) with its 95% t interval."""
    return metrics.mean_interval(np.asarray(with_synthetic, float) - np.asarray(real_only, float), bounds=(-1, 1))


def verdict(lifts: dict[str, dict]) -> str:
    """helps: every recipe's lift interval above zero; hurts: some recipe's interval below zero; else neutral."""
    intervals = [d["interval"] for d in lifts.values() if d["mean"] is not None]
    if not intervals:
        return "neutral"
    if any(high < 0 for _, high in intervals):
        return "hurts"
    return "helps" if all(low > 0 for low, _ in intervals) else "neutral"


def rarest(counts: np.ndarray) -> int:
    """The class with the fewest studies among those that have any."""
    return int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))


def boosted(train, synthetic, boost: int = 0) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Real training studies plus `boost` synthetic studies of the rarest class (0: up to the most common class's
    count), or all the set has if fewer; and the rare class and how many were added."""
    counts = np.bincount(train.classes, minlength=int(max(train.classes.max(), synthetic.classes.max())) + 1)
    rare = rarest(counts)
    extra = synthetic.images[synthetic.classes == rare][: boost or max(counts.max() - counts[rare], 1)]
    return (np.concatenate([train.images, extra]), np.concatenate([train.classes, np.full(len(extra), rare)]),
            rare, len(extra))


def mixed(train, synthetic, mix: str, boost: int, dose: float = 1.0) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The real + synthetic set of a mix: up to class balance, or `boost` studies (all the set's rare ones when 0);
    at a dose below 1, that share of the mix's count (at least one study)."""
    counts = np.bincount(train.classes)
    rare = rarest(counts)
    count = int(counts.max() - counts[rare]) if mix == "balance" else boost or int((synthetic.classes == rare).sum())
    return boosted(train, synthetic, max(1, round(dose * count)))


def classification_family(train, holdout, synthetic, names: list[str], s, show_progress: bool,
                          only: tuple[str, ...] | None = None, cache: dict | None = None,
                          synthetic_only: bool = True) -> dict:
    """Every classification recipe (or those in `only`): real only, synthetic only (unless `synthetic_only` is off)
    and real + synthetic (each mix), over s.seeds seeds. `cache` (a dict kept by the caller) holds the real-only scores, which do not depend on the
    synthetic set, so comparing several synthetic sets on the same real data trains the real-only models once."""
    k = len(names)
    epochs = max(1, round(s.steps * BATCH / len(train.images)))   # real only then costs what the steps budget does
    mixes = {f"real + synthetic ({m})": mixed(train, synthetic, m, s.boost, s.dose) for m in MIXES}
    rare = next(iter(mixes.values()))[2]
    sets = {"real only": (train.images, train.classes), "synthetic only": (synthetic.images, synthetic.classes),
            **{name: (x, y) for name, (x, y, _, _) in mixes.items()}}
    if not synthetic_only:
        del sets["synthetic only"]
    chosen = [r for r in CLASSIFIERS if only is None or r in only]
    cache = {} if cache is None else cache
    data = (len(train.images), float(train.images.sum()), len(holdout.images), float(holdout.images.sum()))
    runs = [(r, n, seed) for r in chosen for n in sets for seed in range(s.seeds)
            if not (n == "real only" and (r, seed, s.seed, s.steps, data) in cache)]
    scores: dict[tuple[str, str], list[tuple]] = {}
    for recipe, name, seed in progress_iter(runs, "utility recipes", enabled=show_progress):
        network, weighted, budget = CLASSIFIERS[recipe]
        model = cls.train_classifier(*sets[name], k, seed=s.seed + seed, batch_size=BATCH, balanced=weighted,
                                     network=network, **({"steps": s.steps} if budget == "steps" else {"epochs": epochs}))
        score = scored(cls.probabilities(model, holdout.images), holdout.classes, rare, k)
        if name == "real only":
            cache[recipe, seed, s.seed, s.steps, data] = score
        scores.setdefault((recipe, name), []).append(score)
    for recipe in chosen:
        scores[recipe, "real only"] = [cache[recipe, seed, s.seed, s.steps, data] for seed in range(s.seeds)]
    recipes = {f"{recipe}, {m}": row for recipe in chosen
               for m, row in recipe_rows(scores, recipe, list(sets), names[rare], holdout.classes == rare).items()}
    return {"rare_class": names[rare], "metric": f"recall_{names[rare]}", "seeds": s.seeds, "epochs": epochs,
            "dose": s.dose, "added": {m: mixes[f"real + synthetic ({m})"][3] for m in MIXES}, "recipes": recipes,
            "verdict": verdict({r: d["lift"] for r, d in recipes.items()}),
            "auc_verdict": verdict({r: d["auc_lift"] for r, d in recipes.items()}),
            "matched_verdict": verdict({r: d["matched_lift"] for r, d in recipes.items()})}


def recipe_rows(scores: dict, recipe: str, sets: list[str], rare: str, is_rare: np.ndarray) -> dict[str, dict]:
    """One recipe's row per mix: each training set's recall, balanced accuracy and AUC over seeds, and the paired
    lifts of real + synthetic (that mix) over real only in recall, AUC and recall at real only's specificity."""
    column = lambda name, j: [v[j] for v in scores[recipe, name]]  # noqa: E731
    row = {name: {f"recall_{rare}": metrics.mean_interval(column(name, 0), (0, 1)),
                  "balanced_accuracy": metrics.mean_interval(column(name, 1), (0, 1)),
                  f"auc_{rare}": metrics.mean_interval(column(name, 2), (0, 1))} for name in sets}
    specificity = column("real only", 3)   # each seed's real-only model at its own decision
    at = lambda name: [recall_at_specificity(p[is_rare], p[~is_rare], q)  # noqa: E731
                       for p, q in zip(column(name, 4), specificity)]
    rows, base = {}, at("real only")
    for m in MIXES:
        mix = f"real + synthetic ({m})"
        rows[m] = {**row, "lift": lift(column(mix, 0), column("real only", 0)),
                   "auc_lift": lift(column(mix, 2), column("real only", 2)),
                   "matched_lift": {**lift(at(mix), base), "specificity": float(np.mean(specificity))}}
    return rows


def scored(probs: np.ndarray, truth: np.ndarray, rare: int, classes: int) -> tuple:
    """scores_on's three figures, the specificity of the model's own decision (the share of other-class studies it
    does not call rare) and its rare-class probabilities, from which recall at another model's specificity is read."""
    others = truth != rare
    specificity = float(np.mean(probs[others].argmax(1) != rare)) if others.any() else float("nan")
    return (*scores_on(probs, truth, rare, classes), specificity, probs[:, rare].copy())


def scores_on(probs: np.ndarray, truth: np.ndarray, rare: int, classes: int) -> tuple[float, float, float]:
    """A classifier's holdout probabilities (N, classes) against the true classes: rare-class recall and balanced
    accuracy at its own decision (the most probable class), and the rare class's ROC AUC against the rest, which no
    decision threshold changes: a lift in recall without one in AUC moved the operating point (as re-weighting
    would), not what the model can tell apart."""
    predicted, is_rare = probs.argmax(1), truth == rare
    return (float(metrics.recall_per_class(predicted, truth, classes)[rare]),
            metrics.balanced_accuracy(predicted, truth, classes),
            roc_auc(probs[is_rare, rare], probs[~is_rare, rare]) if is_rare.any() and (~is_rare).any() else
            float("nan"))


def segmentation_sets(train, synthetic, boost: int, dose: float = 1.0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real only, synthetic only, real + all synthetic, and real + a fixed count (`boost`, 0: half the real count);
    at a dose below 1, that share of each mix's count (at least one pair)."""
    share = lambda n: max(1, round(dose * n)) if dose < 1 else n  # noqa: E731
    fixed = share(min(boost or max(len(train.images) // 2, 1), len(synthetic.images)))
    both = lambda n: (np.concatenate([train.images, synthetic.images[:n]]),  # noqa: E731
                      np.concatenate([train.labels, synthetic.labels[:n]]))
    return {"real only": (train.images, train.labels), "synthetic only": (synthetic.images, synthetic.labels),
            "real + synthetic (all)": both(share(len(synthetic.images))), "real + synthetic (fixed)": both(fixed)}


def fingerprint(*arrays: np.ndarray) -> str:
    """A digest of the arrays' bytes: two training sets with the same studies in the same order share it."""
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def segmenter_key(network: str, steps: int, seed: int, data: str, holdout: str) -> tuple:
    """What a segmenter's holdout Dice depends on: the network, its steps, batch and seed, its data and the holdout."""
    return network, steps, SEGMENT_BATCH, seed, data, holdout


def segmentation_family(train, holdout, synthetic, labels: int, s, show_progress: bool,
                        cache: dict | None = None) -> dict:
    """Every segmentation recipe on real only, synthetic only and real + synthetic (each mix); the lift in mean Dice.
    A fixed-epochs recipe trains each set for as many passes as the steps budget gives real only. `cache` maps
    `segmenter_key(...)` to a mean Dice: a model with the same key (the epochs UNet on real only when its steps come
    out as the steps UNet's, or the evaluation's own utility models) is trained once."""
    sets = segmentation_sets(train, synthetic, s.boost, s.dose)
    epochs = max(1, round(s.steps * SEGMENT_BATCH / len(train.images)))
    prints, held = {name: fingerprint(*xy) for name, xy in sets.items()}, fingerprint(holdout.images, holdout.labels)
    cache = {} if cache is None else cache
    keys = {}
    for recipe, (network, budget) in SEGMENTERS.items():
        for name, (x, _) in sets.items():
            steps = s.steps if budget == "steps" else -(-epochs * len(x) // SEGMENT_BATCH)
            for seed in range(s.seeds):
                keys[recipe, name, seed] = segmenter_key(network, steps, s.seed + seed, prints[name], held)
    runs = list(dict.fromkeys(key for key in keys.values() if key not in cache))
    for network, steps, _, seed, data, _ in progress_iter(runs, "utility recipes", enabled=show_progress):
        x, y = next(xy for name, xy in sets.items() if prints[name] == data)
        model = segmenter.train_segmenter(x, y, labels, steps=steps, batch_size=SEGMENT_BATCH, seed=seed,
                                          network=network)
        per_label = segmenter.dice_per_label(segmenter.segment(model, holdout.images), holdout.labels, labels)
        cache[segmenter_key(network, steps, seed, data, held)] = segmenter.mean_dice(per_label)
    dice = {(recipe, name): [cache[keys[recipe, name, seed]] for seed in range(s.seeds)]
            for recipe in SEGMENTERS for name in sets}
    recipes = {}
    for recipe in SEGMENTERS:
        row = {name: {"mean_dice": metrics.mean_interval(dice[recipe, name], (0, 1))} for name in sets}
        for m in SEGMENT_MIXES:
            recipes[f"{recipe}, {m}"] = {**row, "lift": lift(dice[recipe, f"real + synthetic ({m})"],
                                                             dice[recipe, "real only"])}
    return {"metric": "mean_dice", "seeds": s.seeds, "epochs": epochs, "dose": s.dose,
            "added": {m: len(sets[f"real + synthetic ({m})"][0]) - len(train.images) for m in SEGMENT_MIXES},
            "recipes": recipes, "verdict": verdict({r: d["lift"] for r, d in recipes.items()})}
