"""`medsynth audit`: may this synthetic set be shared? Any set, from any generator, against its training data.

Two forms: `medsynth audit RUN SYNTH` (a medsynth run and the set it made: the run's recorded split, its model
grid, and the membership attack, since the model is at hand) and `medsynth audit SYNTH --train DATA --holdout
DATA` (any synthetic studies against any training and held-out real studies, all brought onto one audit grid;
without a model, membership is not measured and the report says so).

1. Bring training, holdout and synthetic studies onto one grid (medsynth.privacy.sources, or the run's own).
2. Score every study against the training gallery in every channel (medsynth.privacy.gallery).
3. Calibrate each channel on the holdout and combine the channels into one p-value per study; flag and judge the
   set by the rule in medsynth.privacy.calibrate.
4. Plant a ladder of known copies of training studies (medsynth.privacy.plant) and report each rung's recall at
   the same rule; a required rung found too rarely makes the verdict INCONCLUSIVE.
5. Set level: the share of synthetic studies closer to training than to holdout, per class; membership inference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medsynth import provenance
from medsynth.config import AuditConfig, as_dict
from medsynth.errors import MedsynthError
from medsynth.outputs import check_output_dir
from medsynth.privacy import calibrate, membership, report
from medsynth.privacy.findings import Findings, judge, pairs_table, payload, power_table, write_report
from medsynth.privacy.gallery import Gallery, Volumes, label_sources, plant_ladder, residual
from medsynth.privacy.plant import RUNGS
from medsynth.privacy.descriptors import pixel_descriptors
from medsynth.privacy.search import Match
from medsynth.privacy.sources import load_inputs
from medsynth.progress import stage
from medsynth.runs.loaded import LoadedRun
from medsynth.runs.real import RealSplit, load_real as load_real_split
from medsynth.runs.synthset import open_with_run, refuse_edited, studies_on_grid
from medsynth.runtime import resolve_device


@dataclass
class AuditResult:
    out: Path
    verdict: str
    reasons: list[str]
    studies: int
    flagged: int
    recall: dict[str, float]         # per rung of the planted-copy ladder
    min_recall: float                # lowest over the required rungs
    membership_auc: float | None
    seconds: float
    files: list[str] = field(default_factory=list)


def load_real(loaded: LoadedRun, masked: bool, show_progress: bool, min_holdout: int = calibrate.MIN_HOLDOUT,
              purpose: str = "calibration") -> tuple[Volumes, Volumes]:
    """The run's training and holdout studies, preprocessed as training did, as the volumes the channels compare."""
    return tuple(real_volumes(part, masked) for part in load_real_split(loaded, masked, show_progress, min_holdout,
                                                                         purpose))


def real_volumes(part: RealSplit, masked: bool) -> Volumes:
    labels = part.labels if masked else None
    vols = [residual(image[0].numpy(), None if labels is None else labels[k]) for k, image in enumerate(part.images)]
    return Volumes(part.ids, vols, part.images, labels, part.classes)


def load_synthetic(sset, loaded, masked: bool) -> Volumes:
    """The synthetic studies on the run's grid, with the class and the extra conditions each was asked for."""
    ids, vols, classes, images, labels = [], [], [], [], []
    conditions = {c.name: [] for c in loaded.extras if c.name in sset.table.columns}
    for row, study, unit in studies_on_grid(sset, loaded, "audit"):
        ids.append(str(row["study_id"]))
        vols.append(residual(unit[0], study.label if masked else None))
        classes.append(str(row.get("class", "") or ""))
        for name, values in conditions.items():
            values.append(row[name])
        images.append(torch.as_tensor(unit, dtype=torch.float32))
        labels.append(study.label)
    return Volumes(ids, vols, torch.stack(images), np.stack(labels) if masked else None, classes, conditions)


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(centre - half, 0)), float(min(centre + half, 1))


def closer_to_training(synth: Volumes, train: Volumes, holdout: Volumes, seed: int) -> dict:
    """Distance to closest record against a holdout baseline: per class, the share of synthetic studies whose nearest
    study (plain NCC) is a training study, with training subsampled to the holdout's size (0.5 expected)."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(train.volumes), min(len(holdout.volumes), len(train.volumes)), replace=False)
    q = pixel_descriptors(synth.volumes)
    t = pixel_descriptors([train.volumes[i] for i in pick])
    h = pixel_descriptors(holdout.volumes)
    to_train, to_holdout = (q @ t.T).max(1), (q @ h.T).max(1)
    closer = (to_train > to_holdout) + 0.5 * (to_train == to_holdout)
    out = {}
    classes = np.array(synth.classes if any(synth.classes) else ["all"] * len(closer))
    for name in ["all"] + sorted(set(classes) - {"all"}):
        part = closer if name == "all" else closer[classes == name]
        out[name] = {"studies": int(len(part)), "share": float(part.mean()), "interval": wilson(part.sum(), len(part))}
    return out


def membership_attack(loaded: LoadedRun, train: Volumes, holdout: Volumes, s: AuditConfig, masked: bool) -> dict:
    """The loss-based attack on up to `membership_studies` members and holdout studies, under their own conditions
    (a class the run does not know counts as no class; label ids beyond the run's vocabulary as its last label)."""
    rng = np.random.default_rng(s.seed)
    spec = loaded.spec

    def inputs(v: Volumes):
        pick = np.sort(rng.choice(len(v.ids), min(len(v.ids), s.membership_studies), replace=False))
        classes = spec.class_ids(list(np.array(v.classes)[pick]), unknown_as_null=True) if spec.num_classes else None
        labels = torch.from_numpy(v.labels[pick]).long().clamp(max=spec.num_labels - 1) if masked else None
        return loaded.to_model(v.images[pick], spec.conditions(classes, labels))

    losses = [membership.study_losses(loaded.model, loaded.process, *inputs(v), seed=s.seed) for v in (train, holdout)]
    return {**membership.attack(*losses, seed=s.seed), **membership.dp_bounds(loaded.privacy)}


def source_rows(sides: "Sides") -> tuple[list[int | None] | None, list[str] | None, str | None]:
    """Mask-conditioned sets: the training study (row) each synthetic mask was drawn from, as the set says
    (samples.csv) or, when it does not, found by matching label maps; the names pairs.csv shows (a user's mask file
    stays named); and which of the two it was."""
    if not sides.masked:
        return None, None, None
    if sides.mask_source and any(sides.mask_source):
        row = {study: k for k, study in enumerate(sides.train.ids)}
        return [row.get(src) for src in sides.mask_source], sides.mask_source, "the synthetic set's samples.csv"
    rows = label_sources(sides.train.labels, sides.holdout.labels, sides.synthetic.labels)
    return (rows, [sides.train.ids[r] if r is not None else "" for r in rows],
            "label maps matching a training study's more closely than any held-out study's matches one")


def mask_sources(rows: list[int | None] | None, how: str | None, matches: list[list[Match]]) -> dict | None:
    """Which training masks the synthetic masks came from (by design), and how often the image's nearest training
    study is that same study."""
    if not rows or all(r is None for r in rows):
        return None
    return {"from_training_masks": int(sum(r is not None for r in rows)), "identified_by": how,
            "distinct_sources": len({r for r in rows if r is not None}),
            "nearest_image_is_mask_source": int(sum(m[0].index == r for m, r in zip(matches, rows)))}


@dataclass
class Sides:
    """What an audit compares, however it was loaded."""

    train: Volumes
    holdout: Volumes
    synthetic: Volumes
    masked: bool
    grid: dict                         # the audit grid: shape and spacing, and where it came from
    inputs: dict                       # provenance: what was audited
    judged: dict                       # sha256 of every synthetic file judged
    mask_source: list[str] | None = None


def settings_with(settings: AuditConfig | None, redact: bool | None) -> AuditConfig:
    s = settings or AuditConfig()
    unknown = [r for r in s.required if r not in RUNGS]
    if unknown:
        raise MedsynthError(f"audit.required names {unknown}, which are not rungs of the planted-copy ladder; "
                            f"known: {', '.join(RUNGS)}.")
    return AuditConfig(**{**as_dict(s), "redact": redact}) if redact is not None else s


def audit(run: str | Path, synth: str | Path, out: str | Path, settings: AuditConfig | None = None, *,
          redact: bool | None = None, device: str = "auto", overwrite: bool = False,
          show_progress: bool = True) -> AuditResult:
    """Audit `synth` (made by `run`) against the run's training studies; write REPORT atomically. `settings` is the
    `audit` config section; `redact` (when given) overrides its `redact` key."""
    start, s = time.monotonic(), settings_with(settings, redact)
    check_output_dir(out, overwrite)
    refuse_edited(synth, "audit")
    loaded, sset = open_with_run(run, synth, resolve_device(device), "audit")
    masked = loaded.num_labels > 0
    train, holdout = load_real(loaded, masked, show_progress)
    sides = Sides(train, holdout, load_synthetic(sset, loaded, masked), masked,
                  {"shape": list(loaded.meta["shape"]), "from": "the run's model grid"},
                  {"run": loaded.path.name, "run_hash": loaded.run_hash, "synthetic_set": sset.folder.name,
                   "samples_sha256": sset.table_sha256}, sset.file_hashes(),
                  sset.table["mask_source"].astype(str).tolist() if masked and "mask_source" in sset.table else None)
    attack = (lambda: membership_attack(loaded, train, holdout, s, masked)) if s.membership else None
    return audit_sides(sides, s, out, overwrite, show_progress, start, attack,
                       None if s.membership else "turned off (--no-membership)")


def audit_data(synth: str | Path, train: str | Path, out: str | Path, holdout: str | Path | None = None,
               split: str | Path | None = None, settings: AuditConfig | None = None, *, modality: str | None = None,
               redact: bool | None = None, overwrite: bool = False, show_progress: bool = True) -> AuditResult:
    """Audit any synthetic studies against any training data (`holdout` studies, or `split` of `train`)."""
    start, s = time.monotonic(), settings_with(settings, redact)
    check_output_dir(out, overwrite)
    refuse_edited(synth, "audit")
    found = load_inputs(synth, train, holdout, split, modality, show_progress)
    if len(found.holdout.ids) < calibrate.MIN_HOLDOUT:
        raise MedsynthError(f"the audit calibrates on held-out real studies and needs at least {calibrate.MIN_HOLDOUT}; "
                            f"the holdout has {len(found.holdout.ids)}.")
    hashes = {name: provenance.sha256_file(p) for name, p in enumerate_files(synth)}
    sides = Sides(found.train, found.holdout, found.synthetic, found.masked,
                  {"shape": list(found.spec.shape), "spacing_mm": list(found.spec.spacing),
                   "from": "the training studies' median spacing and extent", "modality": found.modality},
                  {"synthetic": str(Path(synth).expanduser().resolve().name), "train": str(Path(train).name),
                   "holdout": str(Path(holdout).name) if holdout else None,
                   "split_sha256": provenance.sha256_file(split) if split else None}, hashes)
    return audit_sides(sides, s, out, overwrite, show_progress, start, None,
                       "not measured: no model was given (membership needs the generator's own loss; audit a "
                       "medsynth run as `medsynth audit RUN SYNTH` to measure it)")


def enumerate_files(folder: str | Path):
    """(relative name, path) of every file under `folder`, sorted: what the report binds itself to."""
    root = Path(folder).expanduser().resolve()
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [(str(p.relative_to(root.parent if root.is_file() else root)), p) for p in paths]


def audit_sides(sides: Sides, s: AuditConfig, out, overwrite: bool, show_progress: bool, start: float,
                attack, no_membership: str | None) -> AuditResult:
    """Score, calibrate, plant, judge and write the report."""
    say = lambda line: stage(f"audit: {line}", show_progress)  # noqa: E731  (a line per stage, in logs too)
    train, holdout, synthetic = sides.train, sides.holdout, sides.synthetic
    say(f"{len(synthetic.ids)} synthetic studies against {len(train.ids)} training studies; building the gallery")
    gallery = Gallery(train, s, show_progress, smooth=0.0 if sides.masked else 1.0)
    images = lambda v: [im[0].numpy() for im in v.images] if sides.masked else None  # noqa: E731
    say(f"calibrating {len(gallery.channels)} channels on {len(holdout.ids)} held-out studies")
    _, null_scores = gallery.score(holdout.volumes, images(holdout))
    nulls = {c: calibrate.fit_null(c, null_scores[c]) for c in gallery.channels}
    rule = calibrate.Rule(s.study_rate, s.alpha, len(gallery.channels))
    say("scoring the synthetic studies")
    rows, names, how = source_rows(sides)
    matches, scores = gallery.score(synthetic.volumes, images(synthetic), rows)
    p = rule.p_values(scores, nulls)
    say(f"measuring detection power on planted copies ({s.copies_per_kind} per rung of the ladder)"
        + ("; then the membership attack" if attack else ""))
    planted = plant_ladder(gallery, train, s.copies_per_kind, s.seed)
    found = Findings(rule, p, power_table(planted, rule, nulls, s.required),
                     closer_to_training(synthetic, train, holdout, s.seed), attack() if attack else None,
                     no_membership, mask_sources(rows, how, matches))
    verdict, reasons = judge(found, s, sides.masked)
    body = {**payload(found, s, verdict, reasons, nulls, gallery.channels, sides), "judged_files": sides.judged}
    table = pairs_table(synthetic, train, matches, scores, nulls, found, gallery.channels, names)
    views = report.Views(train, synthetic, matches, p, null_scores, scores, planted.scores, nulls,
                         rule.channel_level, gallery.channels)
    files = write_report(out, overwrite, body, table, views, s.redact)
    summary = body["summary"]
    say(f"{verdict}: {summary['flagged']} of {len(p)} studies flagged")
    return AuditResult(Path(out).expanduser().resolve(), verdict, reasons, len(p), summary["flagged"],
                       {k: v["recall"] for k, v in found.power.items()}, summary["min_planted_recall"],
                       summary["membership_auc"], time.monotonic() - start, files)
