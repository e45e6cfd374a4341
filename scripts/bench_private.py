"""What differential privacy costs: class-conditioned BreastMNIST at several epsilons, from scratch and fine-tuned.

For each epsilon (inf: no DP) and each start (scratch, or fine-tuned from a run pre-trained on public data that is not
BreastMNIST: the built-in 2D phantoms, which have other classes, so the class embedding starts fresh) a run trains for
the same wall-clock budget on the official train split. The step count of each setting is what fits the budget at
the step time measured first (a private step costs more: per-example gradients), and a private run's noise level is
planned for exactly those steps, so every private setting spends its whole epsilon. Then, per setting:
  - synthetic studies recognised as their class by a MONAI classifier trained on real train (real test: its recall);
  - Frechet distance to real test in that classifier's standardised 32-d features, next to real val vs test (floor);
  - synthetic-only balanced accuracy (classifiers trained on synthetic only, tested on real test) next to real only;
  - the membership attack (denoising loss, medsynth.privacy.membership) on the official train split against val +
    test: AUC with its bootstrap interval, next to the AUC bound that epsilon implies for any attack;
  - seconds per step next to non-private training's.
The synthetic-only balanced accuracy is also measured on real val, the split to choose a recipe on (`--tag NAME --set
KEY=VALUE`: a variant of the fine-tuned private runs, e.g. train.trainable, with its own step cost and run folders),
so that test confirms a choice instead of making it.

    python scripts/bench_private.py --data ../shared/data/breastmnist/breastmnist.npz --minutes 5 --out /tmp/bp
    python scripts/bench_private.py ... --epsilons 10 --starts pre-trained --tag attention \
        --set "train.trainable=['*attention*','*class_embedding*','*time_emb*']"
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from quality_data import real_arrays, synthetic_arrays, utility
from medsynth.config import load_config
from medsynth.data.ingest import ingest
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.evaluation.classifier import predict, train_classifier
from medsynth.evaluation.metrics import frechet_distance, recall_per_class
from medsynth.privacy.membership import attack, dp_bounds, study_losses
from medsynth.runs.loaded import load_run
from medsynth.synthesis.generate import generate
from medsynth.training.trainer import train

CONFIG = "breastmnist_2d_class.yaml"
PUBLIC_RANGE = "train.dp.intensity_range=[0, 255]"   # the 8-bit format's range: public, not a statistic of the data


def dp_overrides(epsilon: float, batch: int) -> list[str]:
    if math.isinf(epsilon):
        return []
    return ["train.dp.enabled=true", f"train.dp.epsilon={epsilon}", f"train.batch_size={batch}", PUBLIC_RANGE]


def seconds_per_step(data: Path, work: Path, overrides: list[str], steps: int = 12) -> float:
    """Wall seconds per training step of this setting (the first two steps, warm-up, left out)."""
    cfg = load_config(CONFIG, overrides + [f"train.max_steps={steps}", "train.sample_every=0", "train.warmup_steps=1"])
    train(cfg, data, work, overwrite=True, show_progress=False)
    elapsed = pd.read_csv(work / "metrics.csv")["elapsed_s"].to_numpy()
    return float((elapsed[-1] - elapsed[1]) / (steps - 2))


def judge_real(real: dict, classes: int) -> dict:
    """The real-data judge, its recall on real test, the feature scaling and the real Frechet floor."""
    judge = train_classifier(*real["train"], classes, seed=0)
    _, train_feat = predict(judge, real["train"][0])
    mean, sd = train_feat.mean(0), train_feat.std(0) + 1e-6
    test_pred, test_feat = predict(judge, real["test"][0])
    _, val_feat = predict(judge, real["val"][0])
    return {"model": judge, "scale": lambda f: (f - mean) / sd, "test_feat": (test_feat - mean) / sd,
            "floor": frechet_distance((val_feat - mean) / sd, (test_feat - mean) / sd),
            "recall": recall_per_class(test_pred, real["test"][1], classes)}


def membership(run, real: dict) -> dict:
    """The loss attack: official train (members) against val + test (never trained on)."""
    spec, losses = run.spec, []
    for parts in (["train"], ["val", "test"]):
        x = torch.from_numpy(np.concatenate([real[p][0] for p in parts]))
        y = np.concatenate([real[p][1] for p in parts])
        classes = spec.class_ids([str(int(c)) for c in y])     # the npz's class ids are the run's class names
        losses.append(study_losses(run.model, run.process, x, spec.conditions(classes), seed=0))
    return {**attack(*losses), **dp_bounds(run.privacy)}


def judge_setting(run_dir: Path, work: Path, real: dict, judge: dict, args) -> dict:
    run = load_run(run_dir, torch.device("cpu"))
    names, classes = run.class_names, len(run.class_names)
    out = work / ("synthetic" if args.guidance == 2.0 else f"synthetic_g{args.guidance:g}")
    generate(run_dir, out, classes=[f"{c}={args.n_per_class}" for c in names], overwrite=True, show_progress=False,
             guidance=args.guidance)
    syn_x, syn_y = synthetic_arrays(out, run)
    pred, feat = predict(judge["model"], syn_x)
    mean, _ = utility(syn_x, syn_y, *real["test"], classes, 0, args.seeds, args.utility_steps)
    val, _ = utility(syn_x, syn_y, *real["val"], classes, 0, args.seeds, args.utility_steps)
    mia = membership(run, real)
    return {"recognised": recall_per_class(pred, syn_y, classes).round(3).tolist(),
            "frechet": frechet_distance(judge["scale"](feat), judge["test_feat"]),
            "synthetic_only_bacc": float(mean[0]), "synthetic_only_bacc_val": float(val[0]), "mia_auc": mia["auc"], "mia_interval": mia["auc_interval"],
            "auc_bound": mia.get("auc_bound", 1.0), "epsilon_spent": run.privacy.get("epsilon", float("inf")),
            "private": run.privacy.get("private", False)}


def cached(path: Path, compute):
    """A figure computed once per work folder (a resumed benchmark reads it back)."""
    if not path.is_file():
        path.write_text(json.dumps(compute()))
    return json.loads(path.read_text())


def measured_cost(work: Path, key: str, overrides: list[str]) -> float:
    """Seconds per step of one setting (key: its epsilon, and /tag for a variant), measured once per work folder
    (costs.json) so a resumed benchmark keeps the same step budgets."""
    path = work / "costs.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    if key not in known:
        known[key] = seconds_per_step(work / "catalog", work / "timing", overrides)
        path.write_text(json.dumps(known))
    return known[key]


def row_key(row: dict) -> tuple[str, float]:
    """A results row's run folder and generation guidance (rows written before variants and guidance choices existed
    have neither: they are the default run names at guidance 2.0)."""
    name = row["run"] if isinstance(row.get("run"), str) else f"eps{row['epsilon']:g}_{row['start']}"
    guidance = row.get("guidance")
    return name, 2.0 if guidance is None or math.isnan(guidance) else float(guidance)


def trained_setting(work: Path, name: str, overrides: list[str], cost: float, minutes: float) -> tuple[int, float]:
    """Train one setting for the steps its measured cost fits in the budget (a finished run folder of the same steps,
    from an earlier call at another guidance, is reused). Returns the steps and training seconds (nan if reused)."""
    steps = int(minutes * 60 / cost)
    checkpoint = work / name / "checkpoints" / "last.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("finished") and state.get("step") == steps:
            return steps, float("nan")
    t0 = time.time()
    train(load_config(CONFIG, overrides + [
        f"train.max_steps={steps}", "train.max_minutes=0", f"train.warmup_steps={min(100, steps // 10)}"]),
        work / "catalog", work / name, overwrite=True, show_progress=True)
    return steps, time.time() - t0


def setting_overrides(work: Path, epsilon: float, start_from: str, args) -> tuple[str, list[str]]:
    """The run name and config overrides of one setting: DP, the pre-trained start, and the variant's own."""
    init = [f"train.init_from={work / 'public'}", "train.init_fresh_layers=true"] if start_from != "scratch" else []
    variant = args.set if args.tag and start_from != "scratch" else []
    name = f"eps{epsilon:g}_{start_from}" + (f"_{args.tag}" if variant else "")
    return name, dp_overrides(epsilon, args.dp_batch) + init + variant


def pretrain(work: Path, steps: int) -> None:
    """The public pre-training run (600 built-in 2D phantoms, their own classes), unless the work folder has it."""
    if (work / "public" / "checkpoints" / "last.pt").is_file():
        return
    phantoms = write_phantom_dataset(work / "phantoms", PhantomSpec(dims=2, size=32, cases=600, seed=0),
                                     overwrite=True, show_progress=False)
    train(load_config(CONFIG, ["conditioning.class_column=pathology", f"train.max_steps={steps}", "train.max_minutes=0"]),
          phantoms, work / "public", overwrite=True, show_progress=True)
    print(f"pre-trained on 600 public 2D phantoms: {steps} steps", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BreastMNIST .npz (train / val / test splits)")
    parser.add_argument("--out", required=True, help="work folder (runs, synthetic sets, results.csv)")
    parser.add_argument("--epsilons", default="1,4,10,inf")
    parser.add_argument("--starts", default="scratch,pre-trained")
    parser.add_argument("--tag", default="", help="name of a variant of the pre-trained settings (its run folders)")
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE of the variant")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock training budget of every setting")
    parser.add_argument("--pretrain-minutes", type=float, default=5.0)
    parser.add_argument("--dp-batch", type=int, default=64, help="expected batch of the private runs (Poisson)")
    parser.add_argument("--n-per-class", type=int, default=200)
    parser.add_argument("--guidance", type=float, default=2.0, help="generation guidance (another value re-judges the "
                        "trained runs: a row per run and guidance)")
    parser.add_argument("--seeds", type=int, default=3, help="synthetic-only classifiers per setting")
    parser.add_argument("--utility-steps", type=int, default=800)
    args = parser.parse_args()
    start, work = time.time(), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    catalog = ingest(args.data, work / "catalog", overwrite=True, show_progress=False).catalog
    real = real_arrays(catalog, load_config(CONFIG))
    classes = int(real["train"][1].max()) + 1
    judge = judge_real(real, classes)
    real_only = cached(work / "real_only.json", lambda: utility(*real["train"], *real["test"], classes, 0, args.seeds,
                                                               args.utility_steps)[0].tolist())
    print(f"real: train {len(real['train'][1])}, test {len(real['test'][1])}; judge recall on real test "
          f"{judge['recall'].round(3).tolist()}; Frechet floor (val vs test) {judge['floor']:.3f}; real-only balanced "
          f"accuracy {real_only[0]:.3f}", flush=True)

    epsilons = [float(e) for e in args.epsilons.split(",")]
    base = measured_cost(work, str(math.inf), [])
    pretrain(work, int(args.pretrain_minutes * 60 / base))

    results = work / "results.csv"
    rows = pd.read_csv(results).to_dict("records") if results.is_file() else []   # settings measured before: kept
    for epsilon in epsilons:
        for start_from in args.starts.split(","):
            name, overrides = setting_overrides(work, epsilon, start_from, args)
            if any(row_key(r) == (name, args.guidance) for r in rows):
                continue
            cost = measured_cost(work, str(epsilon) + (f"/{args.tag}" if name.endswith(f"_{args.tag}") else ""),
                                 overrides)
            print(f"{name}: {cost:.3f} s per step (non-private {base:.3f})", flush=True)
            steps, seconds = trained_setting(work, name, overrides, cost, args.minutes)
            row = {"run": name, "guidance": args.guidance, "epsilon": epsilon, "start": start_from, "steps": steps,
                   "train_s": seconds, "s_per_step": cost, **judge_setting(work / name, work / name, real, judge, args)}
            rows.append(row)
            print(f"{name}: {row}", flush=True)
            pd.DataFrame(rows).to_csv(results, index=False)
    print(f"total {(time.time() - start) / 60:.1f} wall minutes; results in {work / 'results.csv'}")


if __name__ == "__main__":
    main()
