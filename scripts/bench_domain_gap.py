"""#23: can a downstream network tell the synthetic studies from real ones? A classifier two-sample test per class
(evaluation/domain_gap.py; `medsynth evaluate --family` reports the same against its holdout).

For each class, each network of the recipe family (the MONAI Classifier trunk and resnet18 at a quarter width) is
trained to tell real training studies from as many synthetic ones of that class (--disc-steps batches of 16), then
scored on unseen studies: the class's real val and test studies against as many other synthetic ones. The ROC AUC
(mean and 95% t interval over --seeds) is 0.5 where the network cannot tell them apart; near 1 it sees a cue that
marks a study as synthetic. In a mix that adds synthetic studies of the rare class only, such a cue also marks the rare
class, and what the network learns from it does not carry to real patients (docs/benchmarks.md, session 29). Also
printed: two pixel statistics that such a cue often lies in, real training vs synthetic: the share of voxels at the
real data's minimum (a background clipped to one value) and the SD of the Laplacian (fine texture, noise).

    python scripts/bench_domain_gap.py --data phantoms28.npz --run W/run_2400 --synthetic W/run_2400/bench_family_g2 \
        --class-names 0=lesion,1=normal [--seeds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from medsynth import provenance
from medsynth.data.ingest import ingest
from medsynth.evaluation.domain_gap import two_sample
from medsynth.evaluation.recipes import FAMILY_NETWORKS
from medsynth.runs.loaded import load_run
from quality_data import real_arrays, synthetic_arrays


def pixel_cues(images: np.ndarray, floor: float) -> dict:
    """Share of voxels at `floor` (the real data's minimum) and the SD of the 2D Laplacian over every pixel."""
    a = images[:, 0].reshape(-1, *images.shape[-2:])
    lap = 4 * a[:, 1:-1, 1:-1] - a[:, :-2, 1:-1] - a[:, 2:, 1:-1] - a[:, 1:-1, :-2] - a[:, 1:-1, 2:]
    return {"at_minimum": float(np.mean(images <= floor + 1e-4)), "laplacian_sd": float(lap.std())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the MedMNIST-style .npz the run was trained on")
    parser.add_argument("--run", required=True, help="the run folder (its config gives the model grid)")
    parser.add_argument("--synthetic", required=True, help="a set folder `medsynth generate` wrote from the run")
    parser.add_argument("--class-names", help="the run's class names for the file's ids, e.g. 0=lesion,1=normal")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--disc-steps", type=int, default=400)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    start = time.time()
    run = load_run(Path(args.run), "cpu")
    catalog = ingest(args.data, Path(tempfile.mkdtemp(prefix="domain_gap-")) / "catalog", show_progress=False).catalog
    real = real_arrays(catalog, run.cfg)
    ids = {name: int(i) for i, _, name in (p.partition("=") for p in (args.class_names or "").split(",") if p)}
    x, y = synthetic_arrays(Path(args.synthetic), run, ids)
    floor = float(real["train"][0].min())
    result = {"pixels": {"real train": pixel_cues(real["train"][0], floor), "synthetic": pixel_cues(x, floor)},
              "classes": {}}
    print(f"pixels, real train vs synthetic: {result['pixels']}")
    for c in np.unique(y):
        unseen = np.concatenate([real[k][0][real[k][1] == c] for k in ("val", "test")])
        for network in FAMILY_NETWORKS:
            r = two_sample(real["train"][0][real["train"][1] == c], unseen, x[y == c], network, args.seeds,
                           args.disc_steps)
            result["classes"].setdefault(str(c), {})[network] = r
            print(f"class {c}, {network}: real vs synthetic AUC {r['mean']:.3f} [{r['interval'][0]:.3f}, "
                  f"{r['interval'][1]:.3f}] (trained on {r['trained_on']}, scored on {r['scored_on']})", flush=True)
    print(f"total: {(time.time() - start) / 60:.1f} minutes")
    if args.json:
        provenance.write_json(Path(args.json), {**result, "args": vars(args)})


if __name__ == "__main__":
    main()
