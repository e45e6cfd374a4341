"""Copy-search power on real data: planted copies of training studies vs held-out real studies.

Splits the dataset by subject (ingest's split), brings every study onto one grid (MONAI preprocessing),
plants --copies copies per kind of random training studies, and searches all of them, plus the holdout,
against the training gallery (medsynth.audit.search: plain-search candidates, then exact flip x shift NCC).
The threshold is calibrated on one half of the holdout (its maximum score); the other half gives the
false-positive rate. Prints recall per kind, that false-positive rate, ROC AUC (copies vs holdout) and
timing. This measures the search alone; calibration and the audit verdict are the privacy-audit issue.

    python scripts/bench_audit.py --data ../shared/data/hippocampus
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from medsynth.audit.plant import KINDS, plant_copy
from medsynth.audit.search import descriptors, nearest
from medsynth.data.catalog import ref_from_row
from medsynth.data.ingest import ingest
from medsynth.data.preprocess import PreprocessSpec, preprocess
from medsynth.data.readers import load_study


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random copy outscores a random held-out study (ties count half)."""
    diff = positive[:, None] - negative[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--holdout", type=float, default=0.35)
    parser.add_argument("--spacing", type=float, nargs="+", default=[1.25, 1.25, 1.25])
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 40, 32])
    parser.add_argument("--copies", type=int, default=10, help="planted copies per kind")
    parser.add_argument("--k", type=int, default=20, help="candidates per query and descriptor")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    catalog = ingest(args.data, holdout=args.holdout, seed=args.seed, show_progress=False).catalog
    spec = PreprocessSpec(spacing=tuple(args.spacing), shape=tuple(args.shape))
    volumes = {r["study_id"]: preprocess(load_study(ref_from_row(r)), spec).image[0].numpy() for _, r in catalog.iterrows()}
    train = [volumes[s] for s in catalog.loc[catalog["split"] == "train", "study_id"]]
    holdout = [volumes[s] for s in catalog.loc[catalog["split"] == "holdout", "study_id"]]
    rng = np.random.default_rng(args.seed)
    sources = rng.choice(len(train), args.copies * len(KINDS))
    copies = [plant_copy(train[s], KINDS[n // args.copies], rng)[0] for n, s in enumerate(sources)]
    prepared = time.perf_counter()
    gallery = descriptors(train)
    found = nearest(copies, train, k=args.k, gallery_descriptors=gallery)
    null = np.array([m.score for m in nearest(holdout, train, k=args.k, gallery_descriptors=gallery)])
    searched = time.perf_counter()
    order = rng.permutation(len(null))
    calibrate, test = null[order[: len(null) // 2]], null[order[len(null) // 2 :]]
    threshold = calibrate.max()
    scores = np.array([m.score for m in found])
    hit = (scores > threshold) & (np.array([m.index for m in found]) == sources)
    print(f"{args.data}: {len(train)} train / {len(holdout)} holdout on grid {args.shape} at {args.spacing} mm; "
          f"{args.copies} planted copies per kind; k={args.k}")
    print(f"holdout nearest-training scores: median {np.median(null):.3f}, max {null.max():.3f}; "
          f"threshold (max of {len(calibrate)} calibration studies) {threshold:.3f}")
    for n, kind in enumerate(KINDS):
        part = slice(n * args.copies, (n + 1) * args.copies)
        print(f"  {kind:11s} recall {hit[part].mean():.2f}   min score {scores[part].min():.3f}")
    print(f"false-positive rate on the other {len(test)} holdout studies: {(test > threshold).mean():.3f}")
    print(f"ROC AUC, copies vs holdout: {roc_auc(scores, null):.4f}")
    queries = len(copies) + len(holdout)
    print(f"search: {queries} queries x {len(train)} gallery in {searched - prepared:.1f} s "
          f"({queries * len(train) / (searched - prepared):.0f} pairs/s incl. refinement); "
          f"data preparation {prepared - start:.1f} s")


if __name__ == "__main__":
    main()
