"""Do the covariates steer the anatomy? (issue #19: conditions beyond the class)

The built-in CT phantoms make anatomy depend on covariates: subcutaneous fat thickens with age, men are larger. This
trains the demo's 3D model (configs/phantom_3d.yaml, without mask conditioning, so the model must make the anatomy)
with `conditioning.classes: [pathology, sex]` and `conditioning.covariates: [age]` for a fixed CPU budget, then
generates healthy studies requested at ages 30, 55 and 80 for both sexes, and measures in every image:
  - body volume: voxels above -500 HU (cm^3);
  - fat share: voxels between -190 and -30 HU (fat) over body voxels;
next to the same measured on the real phantoms of that sex within 10 years of that age. Joint sampling (`--n` alone:
conditions drawn from the training rows) is checked by the correlation of age with fat share, synthetic against real
training studies (Pearson r with its 95% Fisher interval). Then `medsynth evaluate` on the joint set reads each
condition back with judges trained on the real training studies: the age regressor's MAE and Pearson r against the
requested age, and the sex classifier's accuracy per requested sex, each next to the same judge on real holdout.

    python scripts/bench_conditions.py --out /tmp/bench_conditions --minutes 10 [--guidance-per age=3]
        [--set model.condition_path=cross_attention] [--baseline] [--joint-seed 8]

The recipe shipped as configs/phantom_3d_conditions.yaml (session 23) is measured with
    python scripts/bench_conditions.py --out W --minutes 0 --set model.embedding_mode=scale_shift
        --set train.max_steps=1316 [--set train.seed=1]

Resumable: the phantoms, catalog and run in OUT are kept; figures go to OUT/results.json (with --guidance-per or
--joint-seed: OUT/results_<guidance>_seed<k>.json, beside the others).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import stats

from medsynth.config import EvaluateConfig, load_config
from medsynth.evaluation.evaluate import evaluate
from medsynth.data.ingest import ingest
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.runs.layout import RunFolder
from medsynth.synthesis.generate import generate
from medsynth.training.trainer import train

AGES, SEXES = (30, 55, 80), ("F", "M")   # the issue asks 25, 50, 80; the training ages start at 26
SPEC = PhantomSpec(dims=3, size=32, cases=200, seed=0)
JOINT_SEED = 7   # the joint set's generation seed unless --joint-seed names another draw
VOXEL_CM3 = SPEC.spacing_mm**3 / 1000.0


def measure(image: np.ndarray) -> tuple[float, float]:
    """(body volume in cm^3, fat share of the body) of one CT image in HU."""
    body = image > -500
    fat = (image >= -190) & (image <= -30)
    return float(body.sum() * VOXEL_CM3), float(fat.sum() / max(body.sum() + fat.sum(), 1))


def pearson(x: np.ndarray, y: np.ndarray) -> dict:
    """Pearson r with its 95% interval (scipy: Fisher z)."""
    result = stats.pearsonr(x, y)
    interval = result.confidence_interval(0.95)
    return {"r": float(result.statistic), "interval": [float(interval.low), float(interval.high)], "studies": int(len(x))}


def differ(real: dict, synthetic: dict) -> dict:
    """The issue's check (the synthetic r inside the real r's 95% interval) and a two-sample one, which also counts
    the synthetic set's own sampling error: Fisher z of the difference of the two r, and its two-sided p."""
    se = np.sqrt(1 / (real["studies"] - 3) + 1 / (synthetic["studies"] - 3))
    z = float((np.arctanh(synthetic["r"]) - np.arctanh(real["r"])) / se)
    return {"inside": bool(real["interval"][0] <= synthetic["r"] <= real["interval"][1]), "z": z,
            "p": float(2 * stats.norm.sf(abs(z)))}


def prepare(out: Path, cases: int, minutes: float, overrides: list[str], baseline: bool) -> tuple[Path, pd.DataFrame]:
    """The phantoms, their catalog and the trained run (each kept when already there); `overrides` go to the config
    after the bench's own (e.g. model.condition_path=cross_attention). The baseline conditions on the class alone."""
    data, catalog, run = out / "phantoms", out / "catalog", out / "run"
    if not data.exists():
        write_phantom_dataset(data, replace(SPEC, cases=cases), show_progress=False)
    if not catalog.exists():
        ingest(data, catalog, holdout=0.2, show_progress=False)
    if not RunFolder(run).checkpoint.is_file():
        conditions = ([] if baseline else ["conditioning.classes=[pathology, sex]", "conditioning.covariates=[age]"])
        cfg = load_config("phantom_3d.yaml", ["conditioning.mask=false", *conditions, f"train.max_minutes={minutes}",
                                              "train.max_steps=100000", "train.sample_every=100000", *overrides])
        start = time.monotonic()
        done = train(cfg, catalog, run, show_progress=True, config_source="phantom_3d.yaml + conditions")
        print(f"trained {done.step} steps in {time.monotonic() - start:.0f} s (loss {done.loss:.4f})", flush=True)
    real = pd.read_csv(catalog / "catalog.csv", dtype={"study_id": str})
    return run, real


def real_figures(real: pd.DataFrame) -> pd.DataFrame:
    """Body volume and fat share of every real phantom, with its age, sex and split."""
    rows = []
    for _, r in real.iterrows():
        body, fat = measure(np.asarray(nib.load(r["images"]).dataobj, np.float32))
        rows.append({"study_id": r["study_id"], "age": float(r["age"]), "sex": r["sex"], "split": r["split"],
                     "body_cm3": body, "fat_share": fat})
    return pd.DataFrame(rows)


def synthetic_figures(folder: Path) -> pd.DataFrame:
    table = pd.read_csv(folder / "samples.csv", dtype={"study_id": str})
    measured = [measure(np.asarray(nib.load(folder / name).dataobj, np.float32)) for name in table["image"]]
    return table.assign(body_cm3=[m[0] for m in measured], fat_share=[m[1] for m in measured])


def cells(run: Path, out: Path, real: pd.DataFrame, per_cell: int, baseline: bool) -> list[dict]:
    """Per (sex, age): synthetic healthy studies requested there (the baseline cannot ask: healthy studies alone)
    against real phantoms of that sex, age +- 10."""
    rows = []
    for sex in SEXES:
        for age in AGES:
            folder = out / f"syn_{sex}_{age}"
            if not (folder / "samples.csv").exists():
                generate(run, folder, classes=(f"normal={per_cell}",),
                         conditions=() if baseline else (f"sex={sex}", f"age={age}"),
                         seed=age + (1000 if sex == "M" else 0), show_progress=False, overwrite=True)
            syn = synthetic_figures(folder)
            near = real[(real["sex"] == sex) & ((real["age"] - age).abs() <= 10)]
            rows.append({"sex": sex, "age": age, "synthetic": len(syn), "real": len(near),
                         **{f"{k}_{side}": float(v[k].mean()) for side, v in (("synthetic", syn), ("real", near))
                            for k in ("body_cm3", "fat_share")}})
            print(f"{sex} {age}: body {rows[-1]['body_cm3_synthetic']:.0f} cm3 (real {rows[-1]['body_cm3_real']:.0f}), "
                  f"fat share {rows[-1]['fat_share_synthetic']:.3f} (real {rows[-1]['fat_share_real']:.3f})", flush=True)
    return rows


def judged(run: Path, synth: Path, out: Path, steps: int) -> dict:
    """The evaluation's per-condition figures for `synth` (utility left out: it is not what is asked here)."""
    folder = out / f"eval_{synth.name}"
    if not (folder / "report.json").exists():
        evaluate(run, synth, folder, EvaluateConfig(utility=False, steps=steps), overwrite=True, show_progress=False)
    conditions = json.loads((folder / "report.json").read_text())["conditioning"]["conditions"]
    age, sex = conditions["age"], conditions["sex"]["values"]
    for side in ("holdout", "synthetic"):
        print(f"judges on {side}: age MAE {age[side]['mae']:.1f} years, r {age[side]['pearson_r']:.2f} "
              f"({age[side]['studies']} studies); sex recognised " +
              ", ".join(f"{value} {v[side]:.2f}" for value, v in sex.items() if v[side] is not None), flush=True)
    return conditions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget (wall minutes)")
    parser.add_argument("--per-cell", type=int, default=8, help="synthetic studies per (sex, age)")
    parser.add_argument("--joint", type=int, default=64, help="studies drawn jointly for the correlation check")
    parser.add_argument("--joint-seed", type=int, default=JOINT_SEED,
                        help="generation seed of the joint set: another seed gives another draw, e.g. one to choose a "
                        "guidance on and the default one to confirm it")
    parser.add_argument("--guidance-per", action="append", default=[], metavar="NAME=W",
                        help="one condition's own guidance scale for the joint set (e.g. age=3)")
    parser.add_argument("--judge-steps", type=int, default=1200, help="training steps of the evaluation's judges")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="a training config override (e.g. model.condition_path=cross_attention)")
    parser.add_argument("--baseline", action="store_true",
                        help="the single-class config (pathology alone): what the model makes without the conditions")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run, catalog = prepare(args.out, args.cases, args.minutes, args.overrides, args.baseline)
    real = real_figures(catalog)
    table = cells(run, args.out, real, args.per_cell, args.baseline)
    draw = [w.replace("=", "") for w in args.guidance_per] + ([] if args.joint_seed == JOINT_SEED else
                                                              [f"seed{args.joint_seed}"])
    suffix = "".join(f"_{part}" for part in draw)   # "" or e.g. "_age3_seed8": the joint set's folder and results file
    joint_dir = args.out / f"syn_joint{suffix}"
    if not (joint_dir / "samples.csv").exists():
        generate(run, joint_dir, n=args.joint, seed=args.joint_seed, guidance_per=tuple(args.guidance_per),
                 show_progress=False, overwrite=True)
    train_rows = real[real["split"] == "train"]
    joint = synthetic_figures(joint_dir)
    if args.baseline:   # no ages to ask for: each study stands beside a training row's age, as a joint draw would give
        joint["age"] = train_rows["age"].sample(len(joint), replace=True, random_state=7).to_numpy()
    correlation = {"real_train": pearson(train_rows["age"].to_numpy(), train_rows["fat_share"].to_numpy()),
                   "synthetic_joint": pearson(joint["age"].astype(float).to_numpy(), joint["fat_share"].to_numpy())}
    check = differ(correlation["real_train"], correlation["synthetic_joint"])
    print(f"age vs fat share: real training r {correlation['real_train']['r']:.2f} "
          f"[{correlation['real_train']['interval'][0]:.2f}, {correlation['real_train']['interval'][1]:.2f}], "
          f"synthetic joint r {correlation['synthetic_joint']['r']:.2f} ({'inside' if check['inside'] else 'outside'} "
          f"the interval; the two r differ by z {check['z']:+.1f}, p {check['p']:.3f})")
    judges = None if args.baseline else judged(run, joint_dir, args.out, args.judge_steps)
    (args.out / f"results{suffix}.json").write_text(json.dumps({"cells": table, "correlation": correlation,
                                                          "joint_inside_interval": check["inside"],
                                                          "joint_difference": check, "judges": judges}, indent=2))


if __name__ == "__main__":
    main()
