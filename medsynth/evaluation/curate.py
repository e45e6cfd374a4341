"""`medsynth curate RUN SYNTH --out CURATED` (and `medsynth generate --curate`): keep the synthetic studies that a
real-data model finds plausible for their class and that are no nearer a training study than real unseen patients.

Two rules, each calibrated on the run's own held-out real studies and recorded with its figures in the curated set's
generate.json ("curation"):
- not a near-copy: a study's highest correlation (Pearson, on the model grid, against every training study and its
  mirror images along the axes training mirrored) must not exceed the highest correlation any held-out real study has
  with its nearest training study. A study nearer a training patient than every real unseen patient is dropped, so
  curation can never keep a copy that a real patient would not explain;
- plausible (class runs): a MONAI classifier trained on the training studies gives the requested class a probability
  at least the `quantile` (default 0.1) of the probabilities it gives held-out real studies of that class: a study
  less typical of its class than 90% of real ones is dropped.
The curated set is a new set folder (the source set is left as it is); audit and export it like any other.
Curation looks at the training studies, so a private run's set is refused: its selection would be outside the
guarantee.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsynth import provenance
from medsynth.errors import MedsynthError
from medsynth.evaluation import classifier as cls
from medsynth.evaluation.evaluate import load_sets
from medsynth.evaluation.studies import StudySet
from medsynth.outputs import atomic_output_dir, check_output_dir
from medsynth.progress import stage
from medsynth.runs import SetFolder
from medsynth.runs.synthset import open_with_run, refuse_edited
from medsynth.runtime import resolve_device
from medsynth.viz import save_grid, spread_by_class


def shared_with_training(real_nearest: np.ndarray) -> int:
    """How many held-out studies are ten times nearer a training study than the typical held-out study is (1 - r
    below a tenth of the median's): the same image in both splits, not another patient. Scale-free, so data whose
    patients all correlate highly (simple phantoms) is not taken for duplicated."""
    typical = 1.0 - float(np.median(real_nearest))
    return int((1.0 - real_nearest < 0.1 * typical).sum())


@dataclass
class CurateResult:
    out: Path
    kept: int
    dropped: dict[str, str]       # study id -> why
    rule: dict                    # the thresholds and how they were calibrated
    seconds: float


def nearest_correlation(images: np.ndarray, train: np.ndarray, flip_axes: tuple[int, ...]) -> np.ndarray:
    """(N,) each image's highest Pearson correlation with any training image or its mirror along `flip_axes`."""
    def standard(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float64)
        flat = flat - flat.mean(1, keepdims=True)
        return flat / (np.linalg.norm(flat, axis=1, keepdims=True) + 1e-12)

    gallery = [train] + [np.flip(train, axis=2 + a) for a in flip_axes]
    query = standard(images)
    return np.max([(query @ standard(g).T).max(1) for g in gallery], axis=0)


def class_probability(model: torch.nn.Module, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(N,) the classifier's probability of each image's own class."""
    return cls.probabilities(model, images)[np.arange(len(images)), classes]


@dataclass
class Plausibility:
    """Each study's classifier probability of its own class, for held-out real studies and synthetic ones: the
    classifier is trained once, then `keep` cuts at any quantile (a stricter quantile keeps a subset)."""
    count: int                                            # synthetic studies
    real: tuple[np.ndarray, np.ndarray] | None = None     # held-out (probability, class); None: a run without classes
    synthetic: tuple[np.ndarray, np.ndarray] | None = None

    def keep(self, quantile: float, names: list[str]) -> tuple[np.ndarray, dict]:
        """(N,) keep flags at `quantile`, and each class's threshold with how many held-out studies set it."""
        keep, thresholds = np.ones(self.count, bool), {}
        if self.real is None or self.synthetic is None:
            return keep, thresholds
        (real_p, real_c), (syn_p, syn_c) = self.real, self.synthetic
        for c, name in enumerate(names):
            ref = real_p[real_c == c]
            if len(ref) < 2:
                continue     # too few real studies of this class to say what is typical: nothing is dropped for it
            thresholds[name] = {"threshold": float(np.quantile(ref, quantile)), "holdout_studies": int(len(ref))}
            keep &= ~((syn_c == c) & (syn_p < thresholds[name]["threshold"]))
        return keep, thresholds


def plausibility(train: StudySet, holdout: StudySet, synthetic: StudySet, steps: int, seed: int,
                 classes: int) -> Plausibility:
    """A MONAI classifier of the training studies' `classes` classes judges every held-out and synthetic study."""
    if synthetic.classes is None or train.classes is None:
        return Plausibility(len(synthetic.images))
    model = cls.train_classifier(train.images, train.classes, classes, seed=seed, steps=steps)
    return Plausibility(len(synthetic.images),
                        (class_probability(model, holdout.images, holdout.classes), holdout.classes),
                        (class_probability(model, synthetic.images, synthetic.classes), synthetic.classes))


def curate(run: str | Path, synth: str | Path, out: str | Path, *, quantile: float = 0.1, steps: int = 300,
           seed: int = 0, device: str = "auto", overwrite: bool = False, show_progress: bool = True) -> CurateResult:
    """Write the studies of `synth` that pass both rules into a new set folder `out` (atomically)."""
    start = time.monotonic()
    if not 0 <= quantile < 1:
        raise MedsynthError(f"--quantile must be at least 0 and below 1, got {quantile}.")
    check_output_dir(out, overwrite)
    refuse_edited(synth, "curate")
    loaded, sset = open_with_run(run, synth, resolve_device(device), "curate")
    if loaded.privacy.get("mechanism", "none") != "none":
        raise MedsynthError("this set comes from a differentially private run; curation picks studies by their "
                            "likeness to the training studies, which the privacy guarantee does not cover, so it is "
                            "refused. Share the set as generated.")
    stage("curate: loading the run's real studies and the synthetic set", show_progress)
    train, holdout, synthetic = load_sets(loaded, sset, False, show_progress)
    flips = tuple(loaded.cfg.train.flip_axes)
    nearest = nearest_correlation(synthetic.images, train.images, flips)
    real_nearest = nearest_correlation(holdout.images, train.images, flips)
    copy_limit = float(real_nearest.max())
    shared = shared_with_training(real_nearest)
    if shared:
        stage(f"curate: note: {shared} held-out real studies are ten times nearer a training study than the typical "
              f"held-out study: the data's splits seem to share images, so the near-copy limit is {copy_limit:.4f} and "
              "only copies closer than those are dropped; the privacy audit is the check for copies.", show_progress)
    stage("curate: a classifier of the training studies' classes judges plausibility", show_progress)
    judged = plausibility(train, holdout, synthetic, steps, seed, len(loaded.class_names))
    plausible, thresholds = judged.keep(quantile, loaded.class_names)
    ids = sset.table["study_id"].astype(str).tolist()
    dropped = {i: ("nearer a training study than any real held-out study" if n > copy_limit else
                   "less plausible for its class than the real held-out threshold")
               for i, n, ok in zip(ids, nearest, plausible) if n > copy_limit or not ok}
    keep = np.array([i not in dropped for i in ids])
    rule = {"near_copy": {"rule": "drop a study whose highest Pearson correlation with a training study (or its "
                                  "mirror) exceeds the highest any held-out real study has", "limit": copy_limit,
                          "holdout_studies": int(len(real_nearest)), "mirrors": list(flips),
                          "holdout_near_identical_to_training": shared},
            "plausible": {"rule": f"drop a study whose classifier probability for its class is below the {quantile:g} "
                                  "quantile of held-out real studies of that class", "classes": thresholds,
                          "classifier_steps": steps, "seed": seed},
            "nearest_correlation_median": {"kept": float(np.median(nearest[keep])) if keep.any() else None,
                                           "all_synthetic": float(np.median(nearest)),
                                           "real_holdout": float(np.median(real_nearest))},
            "kept": int(keep.sum()), "dropped": dropped}
    with atomic_output_dir(out, overwrite) as tmp:
        write_curated(tmp, sset, keep, synthetic, rule)
    return CurateResult(Path(out).expanduser().resolve(), int(keep.sum()), dropped, rule, time.monotonic() - start)


def write_curated(folder: Path, sset, keep: np.ndarray, synthetic: StudySet, rule: dict) -> None:
    """The kept studies' files, samples.csv, overview.png and generate.json with the curation record."""
    source, files = SetFolder(sset.folder), SetFolder(folder)
    table = sset.table[keep].reset_index(drop=True)
    for _, row in table.iterrows():
        for name in (row["image"], row.get("label")):
            if isinstance(name, str) and name:
                shutil.copy2(sset.folder / name, folder / name)
        shutil.copy2(source.study_record(row["study_id"]), files.study_record(row["study_id"]))
    table.to_csv(files.table, index=False)
    shown = spread_by_class(table["class"].astype(str).tolist())
    if shown:
        save_grid(files.overview, synthetic.images[np.flatnonzero(keep)[shown]], [str(table["class"].iloc[k]) for k in shown])
    meta = json.loads(source.record.read_text())
    meta["curation"] = {**rule, "source_set": sset.folder.name, "source_samples_sha256": sset.table_sha256,
                        "versions": provenance.versions()}
    provenance.write_json(files.record, meta)
