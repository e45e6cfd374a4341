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

    python scripts/bench_private.py --data ../shared/data/breastmnist/breastmnist.npz --minutes 5 --out /tmp/bp
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

from bench_quality import real_arrays, synthetic_arrays, utility
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
    generate(run_dir, work / "synthetic", classes=[f"{c}={args.n_per_class}" for c in names], overwrite=True,
             show_progress=False, guidance=args.guidance)
    syn_x, syn_y = synthetic_arrays(work / "synthetic", run)
    pred, feat = predict(judge["model"], syn_x)
    mean, _ = utility(syn_x, syn_y, *real["test"], classes, 0, args.seeds, args.utility_steps)
    mia = membership(run, real)
    return {"recognised": recall_per_class(pred, syn_y, classes).round(3).tolist(),
            "frechet": frechet_distance(judge["scale"](feat), judge["test_feat"]),
            "synthetic_only_bacc": float(mean[0]), "mia_auc": mia["auc"], "mia_interval": mia["auc_interval"],
            "auc_bound": mia.get("auc_bound", 1.0), "epsilon_spent": run.privacy.get("epsilon", float("inf")),
            "private": run.privacy.get("private", False)}


def cached(path: Path, compute):
    """A figure computed once per work folder (a resumed benchmark reads it back)."""
    if not path.is_file():
        path.write_text(json.dumps(compute()))
    return json.loads(path.read_text())


def measured_costs(work: Path, epsilons: list[float], batch: int) -> dict[float, float]:
    """Seconds per step of each setting, measured once per work folder (costs.json) so a resumed benchmark keeps the
    same step budgets."""
    path = work / "costs.json"
    known = {float(k): v for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}
    for e in epsilons:
        if e not in known:
            known[e] = seconds_per_step(work / "catalog", work / "timing", dp_overrides(e, batch))
    path.write_text(json.dumps({str(k): v for k, v in known.items()}))
    return known


def pretrain(work: Path, steps: int) -> None:
    """The public pre-training run (600 built-in 2D phantoms, their own classes), unless the work folder has it."""
    if (work / "public" / "checkpoints" / "last.pt").is_file():
        return
    phantoms = write_phantom_dataset(work / "phantoms", PhantomSpec(dims=2, size=32, cases=600, seed=0),
                                     overwrite=True, show_progress=False)
    train(load_config(CONFIG, ["conditioning.class_column=pathology", f"train.max_steps={steps}", "train.max_minutes=0"]),
          phantoms, work / "public", overwrite=True, show_progress=False)
    print(f"pre-trained on 600 public 2D phantoms: {steps} steps", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BreastMNIST .npz (train / val / test splits)")
    parser.add_argument("--out", required=True, help="work folder (runs, synthetic sets, results.csv)")
    parser.add_argument("--epsilons", default="1,4,10,inf")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock training budget of every setting")
    parser.add_argument("--pretrain-minutes", type=float, default=5.0)
    parser.add_argument("--dp-batch", type=int, default=64, help="expected batch of the private runs (Poisson)")
    parser.add_argument("--n-per-class", type=int, default=200)
    parser.add_argument("--guidance", type=float, default=2.0)
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
    costs = measured_costs(work, epsilons, args.dp_batch)
    print("seconds per step: " + ", ".join(f"eps {e:g}: {c:.3f}" for e, c in costs.items()), flush=True)
    pretrain(work, int(args.pretrain_minutes * 60 / costs[math.inf]))

    results = work / "results.csv"
    rows = pd.read_csv(results).to_dict("records") if results.is_file() else []   # settings measured before: kept
    for epsilon in epsilons:
        for start_from in ("scratch", "pre-trained"):
            if any(r["epsilon"] == epsilon and r["start"] == start_from for r in rows):
                continue
            steps = int(args.minutes * 60 / costs[epsilon])
            name = f"eps{epsilon:g}_{start_from}"
            init = [f"train.init_from={work / 'public'}", "train.init_fresh_layers=true"] if start_from != "scratch" else []
            t0 = time.time()
            train(load_config(CONFIG, dp_overrides(epsilon, args.dp_batch) + init + [
                f"train.max_steps={steps}", "train.max_minutes=0", f"train.warmup_steps={min(100, steps // 10)}"]),
                work / "catalog", work / name, overwrite=True, show_progress=False)
            row = {"epsilon": epsilon, "start": start_from, "steps": steps, "train_s": time.time() - t0,
                   "s_per_step": costs[epsilon], **judge_setting(work / name, work / name, real, judge, args)}
            rows.append(row)
            print(f"{name}: {row}", flush=True)
            pd.DataFrame(rows).to_csv(results, index=False)
    print(f"total {(time.time() - start) / 60:.1f} wall minutes; results in {work / 'results.csv'}")


if __name__ == "__main__":
    main()
