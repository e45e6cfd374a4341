"""#23: a quick comparison of synthetic sets (one run's sampler settings, curations, generators) by what they do for
the downstream networks, on the val split, before a full `bench_quality.py --family` run.

For each network of the recipe family (the MONAI Classifier trunk and resnet18 at a quarter width, class-balanced
loss, --steps batches of 16) and each seed, a model is trained on real training studies only, and on real plus the
first k rare-class studies of each set (the rarest class of the training split), for k = the count that balances the classes and each of --counts. The
figure is the rare class's ROC AUC on --split, as the lift over real only paired by seed (mean and 95% t interval):
threshold-free, so a set that only moves the decision threshold does not count. Same recipe and seeds as the
family's Classifier and resnet18 rows, fewer mixes, so a comparison of two sets costs minutes, not an hour.

    python scripts/bench_added_sets.py --data phantoms28.npz --run W/run_2400 --class-names 0=lesion,1=normal \
        --sets W/run_2400/bench_family_g2 W/interval_set [--counts 300] [--seeds 5] [--split val] [--json out.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from medsynth import provenance
from medsynth.data.ingest import ingest
from medsynth.evaluation import classifier as cls
from medsynth.evaluation import recipes
from medsynth.evaluation.studies import StudySet
from medsynth.runs.loaded import load_run
from quality_data import real_arrays, synthetic_arrays


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the MedMNIST-style .npz the run was trained on")
    parser.add_argument("--run", required=True, help="the run folder (its config gives the model grid)")
    parser.add_argument("--sets", required=True, nargs="+",
                        help="set folders `medsynth generate` or `medsynth edit` wrote")
    parser.add_argument("--class-names", help="the run's class names for the file's ids, e.g. 0=lesion,1=normal")
    parser.add_argument("--counts", type=int, nargs="*", default=[], help="fixed counts added besides the balancing one")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument("--json", help="also write the figures here")
    return parser.parse_args()


def mixes(train: StudySet, sets: dict[str, StudySet], counts: list[int]) -> dict:
    """{name: (images, classes)}: real only, then each set's first k studies of the rarest class added (recipes.boosted;
    k = up to balance, then each of `counts`)."""
    out = {"real only": (train.images, train.classes)}
    for name, synthetic in sets.items():
        for k in [0, *counts]:
            x, y, _, added = recipes.boosted(train, synthetic, k)
            if k and added < k:
                print(f"skipped {name} +{k}: the set has {added} rare-class studies")
                continue
            out[f"{name} +{added}"] = (x, y)
    return out


def aucs(images, classes, held: StudySet, rare: int, network: str, seeds: int, steps: int) -> np.ndarray:
    """The rare class's ROC AUC on `held` (recipes.scores_on) of the family's recipe on `network`, one per seed."""
    k = int(held.classes.max()) + 1
    out = []
    for seed in range(seeds):
        model = cls.train_classifier(images, classes, k, seed=seed, steps=steps, batch_size=recipes.BATCH,
                                     network=network)
        out.append(recipes.scores_on(cls.probabilities(model, held.images), held.classes, rare, k)[2])
    return np.array(out)


def main() -> None:
    args = arguments()
    start = time.time()
    run = load_run(Path(args.run), "cpu")
    catalog = ingest(args.data, Path(tempfile.mkdtemp(prefix="added_sets-")) / "catalog", show_progress=False).catalog
    real = {k: StudySet(x, None, y) for k, (x, y) in real_arrays(catalog, run.cfg).items()}
    ids = {name: int(i) for i, _, name in (p.partition("=") for p in (args.class_names or "").split(",") if p)}
    sets = {Path(f).name: StudySet(x, None, y) for f in args.sets for x, y in [synthetic_arrays(Path(f), run, ids)]}
    rare = recipes.rarest(np.bincount(real["train"].classes))
    result, mixed = {}, mixes(real["train"], sets, args.counts)
    for network in recipes.FAMILY_NETWORKS:
        base = None
        for name, (x, y) in mixed.items():
            a = aucs(x, y, real[args.split], rare, network, args.seeds, args.steps)
            base = a if base is None else base
            lift = recipes.lift(a, base)
            result.setdefault(network, {})[name] = {"auc": a.tolist(), "lift": lift}
            print(f"{args.split} {network:17s} {name:32s} AUC {a.mean():.3f}  lift {lift['mean']:+.3f} "
                  f"[{lift['interval'][0]:+.3f}, {lift['interval'][1]:+.3f}]", flush=True)
    print(f"total: {(time.time() - start) / 60:.1f} minutes")
    if args.json:
        provenance.write_json(Path(args.json), {"networks": result, "args": vars(args)})


if __name__ == "__main__":
    main()
