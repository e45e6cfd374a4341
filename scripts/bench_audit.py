"""Privacy-audit power and cost.

Power on real data (--data): splits the dataset by subject (ingest's split), brings every study onto one grid
(MONAI preprocessing), plants --copies copies of random training studies at every rung of the ladder
(medsynth.privacy.plant), and scores them and the holdout in the audit's channels (medsynth.privacy.gallery).
The audit's rule (medsynth.privacy.calibrate.Rule) is calibrated on one half of the holdout; the other half, real
scans never trained on, gives the false-positive rate; --repeats random halvings. Prints recall per rung (required
or reported), that rate and ROC AUC.

Cost (--scale N): N random smooth 64^3 volumes as queries (made beforehand into a file on disk, not timed; 1% of
them flipped + shifted + noised copies of gallery studies) against N as gallery, the pixel channel's search (plain
search on 32^3 descriptors, in two tiers from 2,048 studies; flip choice, exact shift alignment of --refine pairs);
pairs/s and peak memory, each size in its own process.

    python scripts/bench_audit.py --data ../shared/data/hippocampus
    python scripts/bench_audit.py --scale 1000 --scale 4000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from medsynth.privacy import calibrate
from medsynth.config import AuditConfig
from medsynth.privacy.gallery import MAX_SHIFT, Gallery, Volumes, plant_ladder, residual
from medsynth.stats import roc_auc
from medsynth.privacy.descriptors import descriptors
from medsynth.privacy.search import ranked
from medsynth.data.catalog import ref_from_row
from medsynth.data.ingest import ingest
from medsynth.data.preprocess import PreprocessSpec, preprocess
from medsynth.data.readers import load_study


def side(ready: dict, ids, masked: bool) -> Volumes:
    """One side on the grid: the image (or, --masked, its residual under its own label map, as a mask-conditioned
    audit compares), with images and label maps for the image channel and the mismatched rung."""
    ids = list(ids)
    images = torch.stack([ready[i].image for i in ids])
    labels = np.stack([ready[i].label[0].numpy().astype(np.uint8) for i in ids]) if masked else None
    vols = [residual(images[k, 0].numpy(), labels[k] if masked else None) for k in range(len(ids))]
    return Volumes(ids, vols, images, labels)


def power(args) -> None:
    start = time.perf_counter()
    catalog = ingest(args.data, holdout=args.holdout, seed=args.seed, show_progress=False).catalog
    spec = PreprocessSpec(spacing=tuple(args.spacing), shape=tuple(args.shape))
    ready = {r["study_id"]: preprocess(load_study(ref_from_row(r)), spec) for _, r in catalog.iterrows()}
    train, held = (side(ready, catalog.loc[catalog["split"] == name, "study_id"], args.masked) for name in ("train", "holdout"))
    holdout = held.volumes
    prepared = time.perf_counter()
    s = AuditConfig(embedding=args.embedding, k=args.k, study_rate=args.study_rate, alpha=args.alpha)
    gallery = Gallery(train, s, show_progress=False, smooth=0.0 if args.masked else 1.0)
    trained = time.perf_counter()
    planted = plant_ladder(gallery, train, args.copies, args.seed)
    _, null = gallery.score(holdout, [im[0].numpy() for im in held.images] if args.masked else None)
    searched = time.perf_counter()
    names = np.array([r.name for r in planted.rungs])
    rule = calibrate.Rule(s.study_rate, s.alpha, len(gallery.channels))
    recalls, false = [], []
    for rep in range(args.repeats):   # calibrate on one half of the holdout, count false positives on the other
        order = np.random.default_rng((args.seed, rep)).permutation(len(holdout))
        calib, test = order[: len(order) // 2], order[len(order) // 2 :]
        nulls = {c: calibrate.fit_null(c, null[c][calib]) for c in gallery.channels}
        flagged = rule.flagged(rule.p_values(planted.scores, nulls))
        recalls.append({n: flagged[names == n].mean() for n in dict.fromkeys(names)})
        false.append(rule.flagged(rule.p_values({c: null[c][test] for c in gallery.channels}, nulls)).mean())
    print(f"{args.data}{' (mask-conditioned: residuals)' if args.masked else ''}: {len(train.ids)} train / {len(holdout)} holdout on grid {args.shape} at {args.spacing} mm; "
          f"{args.copies} planted copies per rung; k={args.k}; channels {', '.join(gallery.channels)}")
    print(f"rule: {rule.describe()}; calibrated on half the holdout, {args.repeats} random halvings")
    for n in dict.fromkeys(names):
        part = names == n
        source = np.mean([m[0].index == i for m, i, keep in zip(planted.matches, planted.sources, part) if keep])
        mark = "required" if n in s.required else "reported"
        print(f"  {n:15s} {mark:8s} recall {np.mean([r[n] for r in recalls]):.2f} (lowest over halvings "
              f"{min(r[n] for r in recalls):.2f})  source found {source:.2f}")
    print(f"false-positive rate on the other half of the holdout (novel real scans): mean {np.mean(false):.3f}, "
          f"highest {np.max(false):.3f} over {args.repeats} halvings of {len(holdout)} studies")
    print("ROC AUC, planted copies vs holdout (pixel channel): "
          f"{roc_auc(planted.scores['pixel'], null['pixel']):.4f}")
    queries = len(planted.rungs) + len(holdout)
    print(f"scoring: {queries} queries x {len(train.ids)} gallery in {searched - trained:.1f} s "
          f"({queries * len(train.ids) / (searched - trained):.0f} pairs/s, all channels); gallery "
          f"{trained - prepared - gallery.encoder_seconds:.1f} s and its contrastive encoder (training and embedding) "
          f"{gallery.encoder_seconds:.1f} s; data preparation {prepared - start:.1f} s")


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
    made = SmoothVolumes(n, seed + 1, gallery, plant_every=100)
    with tempfile.TemporaryDirectory() as tmp:   # queries made beforehand (on disk, not in memory), timed apart
        queries = np.lib.format.open_memmap(f"{tmp}/queries.npy", "w+", np.float32, (n, *gallery.shape[1:]))
        for i in range(n):
            queries[i] = made[i]
        ready = time.perf_counter()
        index = descriptors(gallery)
        indexed = time.perf_counter()
        found = ranked(queries, gallery, k=k, max_shift=MAX_SHIFT, keep=3, gallery_descriptors=index, refine=refine)
        searched = time.perf_counter()
    planted = [i for i in range(n) if made.source(i) is not None]
    hits = sum(found[i][0].index == made.source(i) and found[i][0].score > 0.95 for i in planted)
    seconds = searched - ready
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} x {n} at 64^3 (k={k}, refine={refine}, {'two tiers' if index.previews else 'one tier'}): {seconds:.0f} s "
          f"= index {indexed - ready:.0f} s + search {searched - indexed:.0f} s; {n * n / seconds:,.0f} pairs/s, "
          f"{1e6 * seconds / (n * n):.1f} s per million pairs; peak RSS {peak:,.0f} MB (gallery volumes "
          f"{gallery.nbytes / 2**20:,.0f} MB, descriptors {sum(d.nbytes for d in index.search) / 2**20:,.0f} MB); "
          f"planted copies found {hits}/{len(planted)}; making the data {ready - start:.0f} s (not counted)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--scale", type=int, action="append", default=[])
    parser.add_argument("--holdout", type=float, default=0.35)
    parser.add_argument("--spacing", type=float, nargs="+", default=[1.25, 1.25, 1.25])
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 40, 32])
    parser.add_argument("--copies", type=int, default=10, help="planted copies per rung")
    parser.add_argument("--repeats", type=int, default=20, help="random halvings of the holdout (calibration / novel)")
    parser.add_argument("--study-rate", type=float, default=0.02)
    parser.add_argument("--k", type=int, default=10, help="plain-search candidates per query and descriptor")
    parser.add_argument("--refine", type=int, default=20, help="candidates aligned per query (the audit: 2 k)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--masked", action="store_true", help="compare as a mask-conditioned audit does (residuals, the "
                        "image channel, the mismatched rung); needs label maps")
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
