"""A second small, imbalanced 2D set for the quality benchmark (#23), in BreastMNIST's own format and split sizes.

`bench_quality.py --family` measured its recipes on BreastMNIST; this makes a set of a different kind to check that
what helps there is not tuned to it: built-in 2D CT phantoms (medsynth.data.phantom) at 28 x 28, an abdominal window
(-160 to 240 HU) mapped to 8 bits, class 0 = a small liver lesion (the rare class, 27% as in BreastMNIST's training
split), 1 = no lesion; 546 train / 78 val / 156 test. Every image is procedurally generated: no patient data.

    python scripts/make_phantom_npz.py --out /tmp/phantoms28.npz [--check]
    python scripts/bench_quality.py --data /tmp/phantoms28.npz --family --budgets 600 --class-names 0=lesion,1=normal \
        --set "train.flip_axes=[]" ...

BreastMNIST's config mirrors its training images; these are axial CT slices, where a mirror image puts the spine in
front of the body, so the flip is switched off for them (with it the synthetic set was 11.2x the real Frechet floor,
without it 0.72x: docs/benchmarks.md, #23, session 20).

`--check` then trains the family's first recipe (MONAI Classifier, class-balanced loss, 800 steps of 16) on the real
training split alone, 3 seeds, and prints its balanced accuracy on val: a set worth testing the recipe on has a rare
class that real data can teach (well above 0.5), before any synthetic data is made. The default lesion radius
(0.1-0.15 half-fields, 1.4-2.1 pixels at 28) is the first that real data teaches at a BreastMNIST-like level (val
0.77); 0.05-0.09 and 0.06-0.1 stay near chance (0.56-0.58; docs/benchmarks.md, session 15).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medsynth.data.phantom import PhantomSpec, make_phantom
from medsynth.evaluation import metrics
from medsynth.evaluation.classifier import predict, train_classifier

SPLITS = {"train": 546, "val": 78, "test": 156}
WINDOW_HU = (-160.0, 240.0)


def phantom_split(spec: PhantomSpec, first: int, n: int, rare: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` phantoms numbered from `first` (uint8 images, labels (n, 1)); round(rare * n) of them with a lesion."""
    lesion = np.zeros(n, bool)
    lesion[np.random.default_rng([seed, first]).permutation(n)[: int(round(rare * n))]] = True
    low, high = WINDOW_HU
    images = []
    for k in range(n):
        image = make_phantom(spec, first + k, bool(lesion[k])).image[0]
        images.append(np.round(255 * np.clip((image - low) / (high - low), 0, 1)).astype(np.uint8))
    return np.stack(images), np.where(lesion, 0, 1).astype(np.uint8)[:, None]


def real_only_val(arrays: dict[str, np.ndarray], seeds: int = 3) -> list[float]:
    """Balanced accuracy on val of the class-balanced MONAI Classifier trained on the real training split, per seed."""
    scale = lambda x: x[:, None].astype(np.float32) / 127.5 - 1.0  # noqa: E731  (uint8 -> [-1, 1], one channel)
    train_x, train_y = scale(arrays["train_images"]), arrays["train_labels"][:, 0].astype(np.int64)
    val_x, val_y = scale(arrays["val_images"]), arrays["val_labels"][:, 0].astype(np.int64)
    scores = []
    for seed in range(seeds):
        model = train_classifier(train_x, train_y, 2, seed=seed, steps=800, batch_size=16)
        scores.append(metrics.balanced_accuracy(predict(model, val_x)[0], val_y, 2))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the .npz to write (refused if it exists)")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--rare", type=float, default=0.27, help="share of lesion cases in every split")
    parser.add_argument("--lesion-radius", type=float, nargs=2, default=[0.1, 0.15],
                        help="lesion radius range, in units of half the field of view")
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--check", action="store_true", help="print real-only balanced accuracy on val (3 seeds)")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        parser.error(f"{out} exists; choose another --out or remove it")
    spec = PhantomSpec(dims=2, size=args.size, seed=args.seed, lesion_radius=tuple(args.lesion_radius))
    arrays, first = {}, 0
    for split, n in SPLITS.items():
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = phantom_split(spec, first, n, args.rare, args.seed)
        first += n
    tmp = out.with_name(out.name + ".partial.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.rename(out)
    print(f"wrote {out}: " + ", ".join(f"{s} {n} ({int((arrays[f'{s}_labels'] == 0).sum())} lesion)"
                                      for s, n in SPLITS.items()))
    if args.check:
        scores = real_only_val(arrays)
        print("real only, balanced accuracy on val: " + ", ".join(f"{v:.3f}" for v in scores) +
              f" (mean {np.mean(scores):.3f})")


if __name__ == "__main__":
    main()
