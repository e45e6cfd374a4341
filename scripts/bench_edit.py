"""Editing real studies: is the painted lesion a lesion, is there a seam, and does a segmenter gain from it?

On the built-in 3D CT phantoms (rare lesion class), trains the demo's mask- and class-conditioned config, edits the
healthy holdout studies with a lesion placed inside the liver, and prints:
  - outside the edit regions: changed voxels (must be 0);
  - inside: lesion HU mean and Wasserstein-1 to real lesion voxels, next to the same for healthy liver;
  - the seam: mean gradient magnitude on the edit region's outer shell, next to the same shell before the edit and
    to real lesion borders;
  - conditioning fidelity: a MONAI UNet lesion segmenter trained on real training studies, its lesion Dice on the
    edited studies (against the requested mask) next to its Dice on the real holdout lesion studies (target >= 0.8x);
  - utility: a lesion segmenter trained on the real training studies plus, as many each, (a) the healthy holdout
    studies as they are, (b) whole synthetic lesion studies from `generate`, (c) the healthy holdout studies edited;
    each tested on the real holdout lesion studies over --seeds seeds with 95% intervals: lesion Dice and per-study
    detection recall;
  - seconds per edit on this machine.
`--big` instead times one edit of a 256 x 256 x 128 study and its peak memory (run it alone).
`--real-ct` edits the real CT of ../shared/data/dcmqi_seg (3 slices, DICOM SEG of the liver) with a lesion drawn
inside its liver and writes docs/images/edit_real_ct.png: the grid, affine and HU round trip on real data.

    python scripts/bench_edit.py [--cases 240] [--minutes 10] [--seeds 5] [--out /tmp/bench_edit]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai.losses import DiceFocalLoss
from monai.networks.nets import UNet
from scipy import ndimage, stats

import medsynth
from medsynth import provenance
from medsynth.config import load_config
from medsynth.data.catalog import read_catalog_folder
from medsynth.data.phantom import PhantomSpec, make_phantom, write_phantom_dataset
from medsynth.data.writers import write_nifti
from medsynth.evaluation.metrics import mean_interval
from medsynth.evaluation.segmenter import dice_per_label, segment

LIVER, LESION, WINDOW = 2, 5, (-1000.0, 1000.0)
ROOT = Path(__file__).resolve().parents[1]


def unit(hu: np.ndarray) -> np.ndarray:
    return np.clip(2 * (hu - WINDOW[0]) / (WINDOW[1] - WINDOW[0]) - 1, -1, 1).astype(np.float32)


def read_pairs(paths: list[tuple[Path, Path]]) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([np.asarray(nib.load(i).dataobj, np.float32) for i, _ in paths])
    labels = np.stack([np.asarray(nib.load(lab).dataobj, np.int64) for _, lab in paths])
    return images, labels


def read_set(folder: Path, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The images and label maps of a generated or edited set, in the order of its samples.csv."""
    return read_pairs([(folder / r["image"], folder / r["label"]) for _, r in table.iterrows()])


def shell(region: np.ndarray) -> np.ndarray:
    """The voxels just outside a region: where a seam would show."""
    return ndimage.binary_dilation(region, iterations=1) & ~region


def gradient(hu: np.ndarray, spacing: float) -> np.ndarray:
    return np.sqrt(sum(g**2 for g in np.gradient(hu, spacing)))


def prepare(out: Path, cases: int, minutes: float, lesion_radius: tuple[float, float]):
    spec = PhantomSpec(dims=3, size=32, cases=cases, modality="CT", seed=0, lesion_radius=lesion_radius)
    write_phantom_dataset(out / "data", spec, overwrite=True, show_progress=False)
    medsynth.ingest(out / "data", out / "catalog", holdout=0.4, overwrite=True, show_progress=False)
    cfg = load_config("phantom_3d.yaml", [f"train.max_minutes={minutes}", "train.sample_every=0"])
    start = time.monotonic()
    medsynth.train(cfg, out / "catalog", out / "run", overwrite=True, show_progress=True)
    print(f"trained phantom_3d.yaml for {(time.monotonic() - start) / 60:.1f} min")
    return read_catalog_folder(out / "catalog")[0]


def split_pairs(catalog, data: Path):
    def pair(study_id):
        return data / "imagesTr" / f"{study_id}.nii.gz", data / "labelsTr" / f"{study_id}.nii.gz"
    groups = {}
    for side in ("train", "holdout"):
        for cls in ("lesion", "normal"):
            ids = catalog.loc[(catalog["split"] == side) & (catalog["pathology"] == cls), "study_id"].tolist()
            groups[side, cls] = (ids, [pair(i) for i in ids])
    return groups


def lesion_figures(edited: Path, groups, table) -> dict:
    real_images, real_labels = read_pairs(groups["train", "lesion"][1])
    normal_images, normal_labels = read_pairs(groups["train", "normal"][1])
    real_lesion = real_images[real_labels == LESION]
    liver = normal_images[normal_labels == LIVER]
    painted, seam_after, seam_before = [], [], []
    sources = {s: p for s, p in zip(*groups["holdout", "normal"])}
    for _, row in table.iterrows():
        record = json.loads((edited / f"{row['study_id']}.json").read_text())
        after = np.asarray(nib.load(edited / row["image"]).dataobj, np.float32)
        label = np.asarray(nib.load(edited / row["label"]).dataobj)
        source = next(p for s, p in sources.items() if source_hash(p[0]) == record["source_sha256"])
        before = np.asarray(nib.load(source[0]).dataobj, np.float32)
        lesion = label == LESION
        region = ndimage.distance_transform_edt(~lesion, sampling=10.0) <= record["edit_region"]["margin_mm"]
        painted.append(after[lesion])
        seam_after.append(gradient(after, 10.0)[shell(region)].mean())
        seam_before.append(gradient(before, 10.0)[shell(region)].mean())
    border = [gradient(img, 10.0)[shell(lab == LESION)].mean() for img, lab in zip(real_images, real_labels)]
    painted = np.concatenate(painted)
    return {"edited lesion HU mean": float(painted.mean()), "real lesion HU mean": float(real_lesion.mean()),
            "healthy liver HU mean": float(liver.mean()),
            "W1 edited lesion to real lesion (HU)": float(stats.wasserstein_distance(painted, real_lesion)),
            "W1 healthy liver to real lesion (HU)": float(stats.wasserstein_distance(liver, real_lesion)),
            "gradient on the edit shell after (HU/mm)": float(np.mean(seam_after)),
            "gradient on the same shell before (HU/mm)": float(np.mean(seam_before)),
            "gradient across real lesion borders (HU/mm)": float(np.mean(border))}


_HASHES: dict = {}


def source_hash(path: Path) -> str:
    if path not in _HASHES:
        data = np.asanyarray(nib.load(path).dataobj)
        _HASHES[path] = provenance.sha256_bytes(np.ascontiguousarray(data[None]).tobytes())
    return _HASHES[path]


def segmenter(images, labels, seed: int, steps: int, recipe: str = "steady"):
    """A MONAI UNet lesion segmenter: Dice + focal loss on the lesion only, half of every batch drawn from studies that
    hold a lesion (a lesion is a fraction of a percent of a study; plain Dice + CE learns to say background).
    recipe "plain" (session 9): batch norm, Adam at a constant 2e-3; "steady": instance norm, Adam from 1e-3 with a
    cosine decay to zero, so the model ends where training settled rather than wherever the last step left it."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(unit(images)[:, None])
    y = torch.from_numpy((labels == LESION).astype(np.int64))[:, None]
    with_lesion = torch.from_numpy(np.flatnonzero(y.flatten(1).any(1).numpy()))
    steady = recipe == "steady"
    model = UNet(3, 1, 2, (16, 32, 64), (2, 2), num_res_units=1, norm="instance" if steady else "batch")
    loss_fn = DiceFocalLoss(include_background=False, to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3 if steady else 2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if steady else None
    model.train()
    for _ in range(steps):
        pick = torch.cat([with_lesion[torch.randint(len(with_lesion), (4,), generator=g)],
                          torch.randint(len(x), (4,), generator=g)])
        loss = loss_fn(model(x[pick] + 0.02 * torch.randn(x[pick].shape, generator=g)), y[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
    return model.eval()


def segmenter_figures(train_pairs, extra, tests: dict, seed: int, steps: int, recipe: str) -> dict:
    images, labels = read_pairs(train_pairs)
    if extra is not None:
        images, labels = np.concatenate([images, extra[0]]), np.concatenate([labels, extra[1]])
    model = segmenter(images, labels, seed, steps, recipe)
    return {name: score(model, *test) for name, test in tests.items()}


def score(model, images, labels) -> tuple[float, float, list]:
    """Lesion Dice (mean over studies), per-study detection recall (any predicted lesion voxel on the lesion) and
    each study's lesion Dice."""
    predicted = segment(model, unit(images)[:, None])
    truth = (labels == LESION).astype(np.int64)
    per_study = dice_per_label(predicted, truth, 1)[:, 0]
    found = [bool((p.astype(bool) & t.astype(bool)).any()) for p, t in zip(predicted, truth)]
    return float(np.nanmean(per_study)), float(np.mean(found)), [float(d) for d in per_study]


def independent_lesions(cases: int, lesion_radius: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """`cases` more real lesion phantoms, made with another seed (seen by neither the generator nor any segmenter), as
    written to disk (CT int16 HU): a test set large enough that the test studies are not what decides a comparison."""
    spec = PhantomSpec(dims=3, size=32, cases=cases, modality="CT", seed=1, lesion_radius=lesion_radius)
    studies = [make_phantom(spec, i, lesion=True) for i in range(cases)]
    images = np.stack([np.round(s.image[0]).astype(np.int16).astype(np.float32) for s in studies])
    return images, np.stack([s.label.astype(np.int64) for s in studies])


ARMS = {"real": "real only (+ the healthy studies as they are)",
        "synthetic": "real + whole synthetic lesion studies (in their place)",
        "edited": "real + the healthy studies edited"}
LIFTS = [("edited", "real"), ("synthetic", "real"), ("edited", "synthetic")]


def utility(groups, edits, syn, tests: dict, seeds: int, steps: int, recipe: str, cache: Path) -> dict:
    """Each arm trained with the same seeds (same initial weights and batch draws), so each seed gives a paired
    difference between arms; the lifts' intervals are over those differences. Scores are kept in `cache` by (added
    set, recipe, steps, seed), so an ablation of the edit trains only the edited arm again."""
    base = groups["train", "lesion"][1] + groups["train", "normal"][1]
    extras = {"real": ("real", read_pairs(groups["holdout", "normal"][1])), "synthetic": ("synthetic", syn),
              "edited": edits}
    kept = json.loads(cache.read_text()) if cache.is_file() else {}
    runs = {arm: [] for arm in ARMS}
    for seed in range(seeds):
        for arm, (name, extra) in extras.items():
            key = f"{name} | {recipe} | {steps} | {seed}"
            if key not in kept or set(kept[key]) != set(tests) or any(len(v) < 3 for v in kept[key].values()):
                kept[key] = segmenter_figures(base, extra, tests, seed, steps, recipe)
                cache.write_text(json.dumps(kept, indent=1))
            runs[arm].append(kept[key])
        print(f"  seed {seed}: " + "; ".join(f"{arm} {runs[arm][-1][t][0]:.3f}" for arm in ARMS for t in tests),
              flush=True)
    return report(runs, tests)


def report(runs: dict, tests: dict) -> dict:
    """Each arm's mean with its interval over seeds, and each lift twice: paired by seed (the test studies fixed), and
    paired by study (each study's Dice averaged over the seeds, the interval over studies: which studies are tested
    is part of the uncertainty)."""
    figures = {}
    for test in tests:
        print(f"tested on {test} ({len(tests[test][0])} studies), {len(runs['real'])} seeds, 95% t intervals:")
        for k, (figure, name) in enumerate([("lesion Dice", "Dice"), ("detection recall", "recall")]):
            for arm, label in ARMS.items():
                figures[test, arm, figure] = mean_interval([r[test][k] for r in runs[arm]])
                print(f"  {label}: {figure} {shown(figures[test, arm, figure])}")
            for a, b in LIFTS:
                figures[test, f"{a} - {b}", figure] = mean_interval([x[test][k] - y[test][k]
                                                                     for x, y in zip(runs[a], runs[b])])
                print(f"  {name} lift, {a} minus {b} (paired by seed): "
                      f"{shown(figures[test, f'{a} - {b}', figure], signed=True)}")
        for a, b in LIFTS:
            by_study = np.mean([np.subtract(x[test][2], y[test][2]) for x, y in zip(runs[a], runs[b])], axis=0)
            figures[test, f"{a} - {b}", "lesion Dice by study"] = mean_interval(by_study)
            print(f"  Dice lift, {a} minus {b} (paired by study, over {len(by_study)} studies): "
                  f"{shown(figures[test, f'{a} - {b}', 'lesion Dice by study'], signed=True)}")
    return figures


def shown(figure: dict, signed: bool = False) -> str:
    low, high = figure["interval"]
    form = "+.3f" if signed else ".3f"
    return f"{figure['mean']:{form}} [{low:{form}}, {high:{form}}]"


def make_sets(out: Path, args):
    """Phantoms, the trained run and as many whole synthetic lesion studies as there are healthy holdout studies."""
    catalog = prepare(out, args.cases, args.minutes, tuple(args.lesion_radius))
    healthy = split_pairs(catalog, out / "data")["holdout", "normal"][0]
    medsynth.generate(out / "run", out / "synthetic", classes=[f"lesion={len(healthy)}"], overwrite=True)


def edit_keys(args) -> dict:
    """--edit guidance=1.0 margin_mm=30 as medsynth.edit's keyword arguments."""
    keys = {}
    for item in args.edit:
        key, _, value = item.partition("=")
        keys[key] = float(value) if key in ("guidance", "margin_mm") else int(value)
    return keys


def edited_set(out: Path, args, groups) -> Path:
    """The healthy holdout studies edited with the defaults (folder `edited`) or with --edit's keys (`edited_<keys>`),
    made unless an earlier run left it."""
    keys = edit_keys(args)
    folder = out / "_".join(["edited"] + [f"{k}={v}" for k, v in keys.items()])
    if (folder / "samples.csv").is_file():
        return folder
    start = time.monotonic()
    result = medsynth.edit(out / "run", out / "catalog", folder, cases=tuple(groups["holdout", "normal"][0]),
                           inside="liver", overwrite=True, show_progress=True, **keys)
    per_edit = (time.monotonic() - start) / max(result.edited, 1)
    print(f"edited {result.edited} healthy holdout studies ({len(result.skipped)} skipped), {per_edit:.1f} s per edit; "
          f"voxels changed outside the edit regions: {result.changed_outside}")
    return folder


def main_bench(args) -> None:
    out = Path(args.out)
    if not (args.reuse and (out / "synthetic" / "samples.csv").is_file()):
        make_sets(out, args)
    groups = split_pairs(read_catalog_folder(out / "catalog")[0], out / "data")
    edited = edited_set(out, args, groups)
    table = pd.read_csv(edited / "samples.csv")
    for key, value in lesion_figures(edited, groups, table).items():
        print(f"  {key}: {value:.2f}")
    judge = segmenter(*read_pairs(groups["train", "lesion"][1] + groups["train", "normal"][1]), 0, args.seg_steps,
                      args.seg_recipe)
    edits, holdout = read_set(edited, table), read_pairs(groups["holdout", "lesion"][1])
    on_edits, on_real = score(judge, *edits), score(judge, *holdout)
    print(f"conditioning fidelity: segmenter Dice on edited lesions {on_edits[0]:.3f} (recall {on_edits[1]:.2f}), on "
          f"real holdout lesions {on_real[0]:.3f} (recall {on_real[1]:.2f}); ratio {on_edits[0] / max(on_real[0], 1e-9):.2f}")
    syn = read_set(out / "synthetic", pd.read_csv(out / "synthetic" / "samples.csv"))
    tests = {"the real holdout lesion studies": holdout}
    if args.test_cases:
        tests[f"{args.test_cases} independent real lesion phantoms"] = independent_lesions(args.test_cases,
                                                                                           tuple(args.lesion_radius))
    print(f"utility over {args.seeds} seeds, {args.seg_steps} segmenter steps, recipe {args.seg_recipe}:")
    figures = utility(groups, (edited.name, edits), syn, tests, args.seeds, args.seg_steps, args.seg_recipe,
                      out / "segmenter_scores.json")
    path = out / f"utility_{edited.name}_{args.seg_recipe}_{args.seg_steps}.json"
    path.write_text(json.dumps({" | ".join(k): v for k, v in figures.items()}, indent=1))
    print(f"figures: {path}")


def big(args) -> None:
    """One edit of a 256 x 256 x 128 study: seconds and peak memory (of this process)."""
    out = Path(args.out)
    run = out / "run"
    study = make_phantom(PhantomSpec(dims=3, size=64, fov_mm=320.0, seed=5), 0, lesion=False)
    image = ndimage.zoom(study.image[0], (4, 4, 2), order=1)
    label = ndimage.zoom(study.label, (4, 4, 2), order=0)
    affine = np.diag([1.25, 1.25, 2.5, 1.0])
    affine[:3, 3] = -np.array(image.shape) / 2 * np.array([1.25, 1.25, 2.5])
    folder = out / "big"
    folder.mkdir(parents=True, exist_ok=True)
    write_nifti(folder / "big.nii.gz", np.round(image).astype(np.int16), affine)
    write_nifti(folder / "big_label.nii.gz", label.astype(np.uint8), affine, label=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.monotonic()
    result = medsynth.edit(run, folder, out / "big_edited", inside="liver", overwrite=True, show_progress=False)
    print(f"256 x 256 x 128 study: {result.edited} edit in {time.monotonic() - start:.1f} s; peak memory "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (before the edit {before:.0f} MB); "
          f"changed outside the region: {result.changed_outside}")


def real_ct(args) -> None:
    """The dcmqi CT (real, 3 slices, liver SEG): a 12 mm lesion drawn in its liver, edited, checked, pictured."""
    from medsynth.data.readers import load_study, scan
    from medsynth.viz import save_edit_grid

    out, data = Path(args.out), ROOT.parent / "shared" / "data" / "dcmqi_seg"
    found = scan(data)
    study = load_study(found.refs[0], found.label_names)
    liver = study.label == 1                                       # the SEG's segment 1, 'Liver'
    depth = ndimage.distance_transform_edt(liver, sampling=study.spacing)
    centre = np.unravel_index(np.argmax(depth), depth.shape)
    grid = np.indices(study.spatial_shape).astype(float)
    inplane = sum(((grid[a] - centre[a]) * study.spacing[a]) ** 2 for a in (0, 1))
    lesion = (inplane <= 12.0**2) & liver
    masks = out / "ct_lesions"
    masks.mkdir(parents=True, exist_ok=True)
    write_nifti(masks / f"{study.study_id}.nii.gz", np.where(lesion, LESION, 0).astype(np.uint8), study.affine, label=True)
    result = medsynth.edit(out / "run", data, out / "ct_edited", lesions=masks, margin_mm=8.0, overwrite=True,
                           show_progress=False)
    edited = nib.load(out / "ct_edited" / "edit_00000_image.nii.gz")
    after = np.asarray(edited.dataobj)
    region = ndimage.distance_transform_edt(~lesion, sampling=study.spacing) <= 8.0
    before = study.image[0]
    print(f"real CT {study.spatial_shape} at {study.spacing} mm: dtype {after.dtype}, affine max difference "
          f"{np.abs(edited.affine - study.affine).max():.2e} mm, voxels changed outside the region "
          f"{int((after != before.astype(after.dtype))[~region].sum())}, lesion HU {after[lesion].mean():.0f} "
          f"(liver before {before[liver].mean():.0f}), HU range kept {after.min():.0f}..{after.max():.0f}")
    k = centre[2]
    box = tuple(slice(max(c - 60, 0), c + 60) for c in centre[:2])
    rows = [(before[..., k], after[..., k].astype(np.float32), lesion[..., k], "real CT slice"),
            (before[box + (k,)], after[box + (k,)].astype(np.float32), lesion[box + (k,)], "zoomed")]
    path = ROOT / "docs" / "images" / "edit_real_ct.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_edit_grid(path, rows)
    print(f"picture: {path.relative_to(ROOT)} ({result.edited} edit)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bench_edit")
    parser.add_argument("--cases", type=int, default=240)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of phantom_3d.yaml")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lesion-radius", type=float, nargs=2, default=(0.15, 0.22), help="phantom lesion radius range "
                        "(half fields of view; the phantoms' default 0.06 0.1 gives lesions of 2-20 voxels at 32^3, "
                        "which no segmenter here finds)")
    parser.add_argument("--seg-steps", type=int, default=500)
    parser.add_argument("--seg-recipe", choices=("steady", "plain"), default="steady", help="the lesion segmenter's "
                        "training: 'plain' is session 9's (batch norm, constant learning rate)")
    parser.add_argument("--test-cases", type=int, default=100, help="an independent real test set of this many lesion "
                        "phantoms (another seed), besides the holdout lesion studies; 0 for none")
    parser.add_argument("--edit", nargs="*", default=[], metavar="KEY=VALUE", help="edit settings other than the "
                        "defaults (guidance=1.0, margin_mm=30, steps=40, resample=5); that edited set is made and "
                        "scored in its own folder")
    parser.add_argument("--reuse", action="store_true", help="keep the run, edits and synthetic set of an earlier run "
                        "in --out; redo the figures")
    parser.add_argument("--big", action="store_true", help="time and memory of one 256 x 256 x 128 edit (needs --out "
                        "of an earlier run of this script)")
    parser.add_argument("--real-ct", action="store_true", help="edit the real dcmqi CT (needs an earlier run's --out)")
    args = parser.parse_args()
    big(args) if args.big else real_ct(args) if args.real_ct else main_bench(args)


if __name__ == "__main__":
    main()
