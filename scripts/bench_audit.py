"""Privacy-audit power and cost.

Power on real data (--data): splits the dataset by subject (ingest's split), brings every study onto one grid
(MONAI preprocessing), plants --copies copies per kind of random training studies, and runs the audit's channels
(medsynth.privacy.audit.Gallery: pixel NCC under flips and shifts, SSIM, block texture, optional embedding) on them
and on the holdout. Calibration uses one half of the holdout (Gumbel fit, family-wise rule for a set of --set-size
studies); the other half gives the false-positive rate. Prints recall per kind, that rate and ROC AUC.

Cost (--scale N): N random smooth 64^3 volumes as queries against N as gallery, pixel channel (plain search +
exact flip x shift refinement of the top --k), pairs/s and peak memory; run two sizes to see linear growth.

    python scripts/bench_audit.py --data ../shared/data/hippocampus
    python scripts/bench_audit.py --scale 1000 --scale 2000
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from scipy import ndimage

from medsynth.privacy import calibrate
from medsynth.privacy.audit import Gallery, Settings, Volumes, flags
from medsynth.privacy.membership import roc_auc
from medsynth.privacy.plant import KINDS, plant_copy
from medsynth.privacy.search import descriptors, ranked
from medsynth.data.catalog import ref_from_row
from medsynth.data.ingest import ingest
from medsynth.data.preprocess import PreprocessSpec, preprocess
from medsynth.data.readers import load_study


def power(args) -> None:
    start = time.perf_counter()
    catalog = ingest(args.data, holdout=args.holdout, seed=args.seed, show_progress=False).catalog
    spec = PreprocessSpec(spacing=tuple(args.spacing), shape=tuple(args.shape))
    volumes = {r["study_id"]: preprocess(load_study(ref_from_row(r)), spec).image[0].numpy() for _, r in catalog.iterrows()}
    train = [volumes[s] for s in catalog.loc[catalog["split"] == "train", "study_id"]]
    holdout = [volumes[s] for s in catalog.loc[catalog["split"] == "holdout", "study_id"]]
    rng = np.random.default_rng(args.seed)
    sources = rng.choice(len(train), args.copies * len(KINDS))
    copies = [plant_copy(train[s], KINDS[n // args.copies], rng, -1.0)[0].astype(np.float32) for n, s in enumerate(sources)]
    prepared = time.perf_counter()
    gallery = Gallery(Volumes([str(i) for i in range(len(train))], train), Settings(embedding=args.embedding, k=args.k),
                      show_progress=False)
    found, scores = gallery.score(copies)
    _, null = gallery.score(holdout)
    searched = time.perf_counter()
    order = rng.permutation(len(holdout))
    calib, test = order[: len(order) // 2], order[len(order) // 2 :]
    nulls = {c: calibrate.fit_null(c, null[c][calib]) for c in gallery.channels}
    level = calibrate.study_level(args.alpha, len(gallery.channels), args.set_size)
    hit, _ = flags(scores, nulls, level)
    false, _ = flags({c: null[c][test] for c in gallery.channels}, nulls, level)
    print(f"{args.data}: {len(train)} train / {len(holdout)} holdout on grid {args.shape} at {args.spacing} mm; "
          f"{args.copies} planted copies per kind; k={args.k}; channels {', '.join(gallery.channels)}")
    print(f"threshold for a {args.set_size}-study set at family-wise error {args.alpha} (per study and channel "
          f"p <= {level:.1e}), calibrated on {len(calib)} holdout studies:")
    for c in gallery.channels:
        s = nulls[c].summary(level)
        print(f"  {c:9s} holdout median {s['holdout_median']:.3f} max {s['holdout_max']:.3f} -> threshold {s['threshold']:.3f}")
    for n, kind in enumerate(KINDS):
        part = slice(n * args.copies, (n + 1) * args.copies)
        source = np.mean([m[0].index == i for m, i in zip(found[part], sources[part])])
        print(f"  {kind:11s} recall {hit[part].mean():.2f}  source found {source:.2f}  "
              + "  ".join(f"min {c} {scores[c][part].min():.3f}" for c in gallery.channels))
    print(f"false-positive rate on the other {len(test)} holdout studies: {false.mean():.3f}")
    print("ROC AUC, copies vs holdout (pixel channel): "
          f"{roc_auc(scores['pixel'], null['pixel']):.4f}")
    queries = len(copies) + len(holdout)
    print(f"scoring: {queries} queries x {len(train)} gallery in {searched - prepared:.1f} s "
          f"({queries * len(train) / (searched - prepared):.0f} pairs/s, all channels); data preparation {prepared - start:.1f} s")


def scale(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    smooth = lambda: ndimage.zoom(rng.standard_normal((8, 8, 8)), 8, order=1).astype(np.float32)  # noqa: E731
    gallery, queries = [smooth() for _ in range(n)], [smooth() for _ in range(n)]
    start = time.perf_counter()
    index = descriptors(gallery)
    ranked(queries, gallery, k=k, keep=1, gallery_descriptors=index)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} x {n} at 64^3, k={k}: {seconds:.1f} s, {n * n / seconds:,.0f} pairs/s, peak RSS {peak:,.0f} MB "
          f"(volumes alone {2 * n * 64 ** 3 * 4 / 2 ** 20:,.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--scale", type=int, action="append", default=[])
    parser.add_argument("--holdout", type=float, default=0.35)
    parser.add_argument("--spacing", type=float, nargs="+", default=[1.25, 1.25, 1.25])
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 40, 32])
    parser.add_argument("--copies", type=int, default=10, help="planted copies per kind")
    parser.add_argument("--k", type=int, default=10, help="plain-search candidates per query and descriptor")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--set-size", type=int, default=100, help="synthetic studies the threshold is set for")
    parser.add_argument("--embedding", action="store_true", help="also train and use the contrastive encoder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.data:
        power(args)
    for n in args.scale:
        scale(n, args.k, args.seed)
    if not args.data and not args.scale:
        parser.error("give --data DATASET and/or --scale N")


if __name__ == "__main__":
    main()
