"""Privacy-audit power and cost.

Power on real data (--data): splits the dataset by subject (ingest's split), brings every study onto one grid
(MONAI preprocessing), plants --copies copies per kind of random training studies, and runs the audit's channels
(medsynth.privacy.audit.Gallery: pixel NCC under flips and shifts, SSIM, block texture, optional embedding) on them
and on the holdout. Calibration uses one half of the holdout (Gumbel fit, family-wise rule for a set of --set-size
studies); the other half gives the false-positive rate. Prints recall per kind, that rate and ROC AUC.

Cost (--scale N): N random smooth 64^3 volumes as queries (made on demand, 1% of them flipped + shifted + noised
copies of gallery studies) against N as gallery, the pixel channel's search (plain search on 32^3 descriptors,
flip choice, exact shift alignment of --refine pairs); pairs/s and peak memory, each size in its own process.

    python scripts/bench_audit.py --data ../shared/data/hippocampus
    python scripts/bench_audit.py --scale 1000 --scale 4000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medsynth.privacy import calibrate
from medsynth.config import AuditConfig
from medsynth.privacy.audit import Gallery, Volumes, flags
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
    gallery = Gallery(Volumes([str(i) for i in range(len(train))], train), AuditConfig(embedding=args.embedding, k=args.k),
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


class SmoothVolumes(Sequence):
    """`n` random 64^3 studies made on demand (smooth anatomy-like field plus fine texture), so a 4,000-study query
    set never sits in memory at once; every `plant_every`-th one is a flipped, shifted, noised copy of a gallery study."""

    def __init__(self, n: int, seed: int, gallery: np.ndarray | None = None, plant_every: int = 0) -> None:
        self.n, self.seed, self.gallery, self.plant_every = n, seed, gallery, plant_every

    def __len__(self) -> int:
        return self.n

    def source(self, i: int) -> int | None:
        return (i * 7919) % len(self.gallery) if self.plant_every and i % self.plant_every == 0 else None

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        rng = np.random.default_rng((self.seed, i))
        if self.source(i) is not None:
            copy = np.roll(np.flip(self.gallery[self.source(i)], int(rng.integers(3))), rng.choice([-2, -1, 1, 2], 3), (0, 1, 2))
            return (copy + 0.05 * rng.standard_normal(copy.shape)).astype(np.float32)
        field = ndimage.zoom(rng.standard_normal((8, 8, 8)), 8, order=1)
        return (field + 0.2 * rng.standard_normal(field.shape)).astype(np.float32)


def scale(n: int, k: int, refine: int, seed: int) -> None:
    start = time.perf_counter()
    gallery = np.stack(SmoothVolumes(n, seed)[:])
    made = time.perf_counter()
    index = descriptors(gallery)
    indexed = time.perf_counter()
    queries = SmoothVolumes(n, seed + 1, gallery, plant_every=100)
    found = ranked(queries, gallery, k=k, keep=1, gallery_descriptors=index, refine=refine)
    searched = time.perf_counter()
    planted = [i for i in range(n) if queries.source(i) is not None]
    hits = sum(found[i][0].index == queries.source(i) and found[i][0].score > 0.95 for i in planted)
    seconds = searched - made
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} x {n} at 64^3 (k={k}, refine={refine}): {seconds:.0f} s = index {indexed - made:.0f} s + search "
          f"{searched - indexed:.0f} s; {n * n / seconds:,.0f} pairs/s, {1e6 * seconds / (n * n):.1f} s per million pairs; "
          f"peak RSS {peak:,.0f} MB (gallery volumes {gallery.nbytes / 2**20:,.0f} MB, descriptors "
          f"{sum(d.nbytes for d in index.search) / 2**20:,.0f} MB); planted copies found {hits}/{len(planted)}; "
          f"making the data {made - start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--scale", type=int, action="append", default=[])
    parser.add_argument("--holdout", type=float, default=0.35)
    parser.add_argument("--spacing", type=float, nargs="+", default=[1.25, 1.25, 1.25])
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 40, 32])
    parser.add_argument("--copies", type=int, default=10, help="planted copies per kind")
    parser.add_argument("--k", type=int, default=10, help="plain-search candidates per query and descriptor")
    parser.add_argument("--refine", type=int, default=10, help="(candidate, flip) pairs aligned exactly per query")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--set-size", type=int, default=100, help="synthetic studies the threshold is set for")
    parser.add_argument("--embedding", action="store_true", help="also train and use the contrastive encoder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.data:
        power(args)
    if len(args.scale) == 1:
        scale(args.scale[0], args.k, args.refine, args.seed)
    else:   # each size in its own process, so each peak memory is its own
        for n in args.scale:
            subprocess.run([sys.executable, __file__, "--scale", str(n), "--k", str(args.k), "--refine", str(args.refine),
                            "--seed", str(args.seed)], check=True)
    if not args.data and not args.scale:
        parser.error("give --data DATASET and/or --scale N")


if __name__ == "__main__":
    main()
