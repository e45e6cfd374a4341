"""`medsynth audit RUN SYNTH --out REPORT`: may this synthetic set be shared?

1. Load the run's training and holdout studies (its recorded split) and the synthetic set onto one grid.
   Mask-conditioned runs are compared on the mask-explained residual (image minus each label region's mean, label
   borders blanked): a synthetic image painted onto a training mask shares that mask's shape by design; a copy
   also shares the patient's texture.
2. Score every query against the training gallery in four channels: pixel (NCC under flips and shifts,
   medsynth.privacy.search), structure (SSIM via MONAI on the aligned top candidates), texture (block NCC of the
   high-passed volumes with local shifts) and embedding (cosine in a contrastive encoder trained on the training
   studies).
3. Calibrate each channel on the holdout (medsynth.privacy.calibrate) and flag with a family-wise rule.
4. Plant known copies of training studies of every kind and report the recall at that same threshold; low recall
   makes the verdict INCONCLUSIVE.
5. Set level: the share of synthetic studies closer to training than to holdout, per class; membership inference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.metrics import SSIMMetric
from scipy import ndimage

from medsynth import provenance
from medsynth.config import AuditConfig, as_dict
from medsynth.models import encoder
from medsynth.outputs import atomic_output_dir, check_output_dir
from medsynth.privacy import calibrate, membership, report
from medsynth.privacy.plant import KINDS, plant_copy
from medsynth.privacy.search import Match, align, descriptors, pixel_descriptors, ranked, texture_score
from medsynth.progress import stage
from medsynth.runs.loaded import LoadedRun
from medsynth.runs.real import RealSplit, load_real as load_real_split
from medsynth.runs.synthset import SyntheticSet, open_with_run, studies_on_grid
from medsynth.runtime import resolve_device

CHANNELS = ("pixel", "smooth", "structure", "texture", "embedding")
SMOOTH_VOXELS = 2.0   # the smooth channel compares aligned pairs after this Gaussian blur: finds blurred, re-noised copies
MAX_SHIFT = 3         # voxels of shift the exact search tries along each axis
@dataclass
class AuditResult:
    out: Path
    verdict: str
    reasons: list[str]
    studies: int
    flagged: int
    recall: dict[str, float]
    min_recall: float                # lowest over the kinds
    membership_auc: float | None
    seconds: float
    files: list[str] = field(default_factory=list)


@dataclass
class Volumes:
    """Studies on the model grid: the volumes the channels compare (channel 0, or its residual) plus metadata."""

    ids: list[str]
    volumes: list[np.ndarray]
    images: torch.Tensor | None = None     # (N, C, *spatial) model units, for membership
    labels: np.ndarray | None = None       # (N, *spatial) label maps
    classes: list[str] = field(default_factory=list)


def residual(volume: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """`volume` minus the mean of each label region (its own label map): what the mask does not explain.

    A one-voxel band either side of every label border is set to 0 as well: there the partial-volume edge follows
    the mask's shape, which a mask-conditioned sample shares with its mask's source by design (left in, it made
    samples painted on a training mask look closer to that study than any held-out study is)."""
    if labels is None:
        return volume
    _, inverse = np.unique(labels, return_inverse=True)
    means = np.bincount(inverse.ravel(), volume.ravel()) / np.bincount(inverse.ravel())
    border = ndimage.grey_dilation(labels, size=(3,) * labels.ndim) != ndimage.grey_erosion(labels, size=(3,) * labels.ndim)
    return np.where(border, 0.0, volume - means[inverse.reshape(volume.shape)]).astype(np.float32)


def smooth_score(query: np.ndarray, source: np.ndarray) -> float:
    """NCC of an aligned pair after both are blurred by SMOOTH_VOXELS: a copy that was blurred and re-noised (what
    a generator that regenerates its training image looks like) agrees with its source at this scale although its
    fine detail is gone; voxels a shift or rotation filled in (constant) are left out."""
    keep = (query != query.flat[0]) | (source != source.flat[0])
    a, b = (ndimage.gaussian_filter(np.asarray(v, np.float32), SMOOTH_VOXELS)[keep] for v in (query, source))
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / max(np.sqrt((a @ a) * (b @ b)), 1e-12))


def unit_range(volume: np.ndarray) -> np.ndarray:
    """1st-99th percentile to [0, 1] (clipped): SSIM needs one data range for every study."""
    lo, hi = np.percentile(volume, [1, 99])
    return np.clip((volume - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


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
    ids, vols, classes = [], [], []
    for row, study, unit in studies_on_grid(sset, loaded, "audit"):
        ids.append(str(row["study_id"]))
        vols.append(residual(unit[0], study.label if masked else None))
        classes.append(str(row.get("class", "") or ""))
    return Volumes(ids, vols, classes=classes)


class Gallery:
    """The training studies in every channel, ready to score queries against."""

    def __init__(self, train: Volumes, s: AuditConfig, show_progress: bool, smooth: float = 1.0) -> None:
        self.raw = train.volumes
        self.sigma = smooth
        self.volumes = [self.smoothed(v) for v in self.raw]
        self.descriptors = descriptors(self.volumes)
        self.ssim_ready = [unit_range(v) for v in self.volumes]
        self.dims = self.volumes[0].ndim
        self.ssim = SSIMMetric(spatial_dims=self.dims, data_range=1.0, win_size=min(7, *self.volumes[0].shape) // 2 * 2 + 1)
        self.k, self.refine = s.k, 2 * s.k
        self.encoder = None
        if s.embedding:
            stack = np.stack(self.raw)[:, None]
            self.encoder = encoder.train_encoder(stack, steps=s.encoder_steps, seed=s.seed, show_progress=show_progress)
            self.embeddings = encoder.embed(self.encoder, stack)

    def smoothed(self, volume: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(volume, self.sigma) if self.sigma else volume

    @property
    def channels(self) -> tuple[str, ...]:
        return CHANNELS if self.encoder is not None else CHANNELS[:3]

    def score(self, queries: list[np.ndarray]) -> tuple[list[list[Match]], dict[str, np.ndarray]]:
        """Each query's top pixel matches and its score in every channel (higher: more alike)."""
        smooth = [self.smoothed(q) for q in queries]
        matches = ranked(smooth, self.volumes, k=self.k, max_shift=MAX_SHIFT, keep=3, gallery_descriptors=self.descriptors,
                         refine=self.refine)
        structure, texture, smooth_ = [], [], []
        for query, raw, found in zip(smooth, queries, matches):
            best, fine, blurred = -1.0, -1.0, -1.0
            for m in found:
                a = torch.from_numpy(unit_range(align(query, m)))[None, None]
                b = torch.from_numpy(self.ssim_ready[m.index])[None, None]
                best = max(best, float(self.ssim(a, b).item()))
                fine = max(fine, texture_score(align(raw, m), self.raw[m.index]))
                blurred = max(blurred, smooth_score(align(raw, m), self.raw[m.index]))
            structure.append(best)
            texture.append(fine)
            smooth_.append(blurred)
        scores = {"pixel": np.array([f[0].score for f in matches]), "smooth": np.array(smooth_),
                  "structure": np.array(structure), "texture": np.array(texture)}
        if self.encoder is not None:
            z = encoder.embed(self.encoder, np.stack(queries)[:, None], flips=True)   # (Q, flips, D)
            scores["embedding"] = (z @ self.embeddings.T).max(axis=(1, 2))
        return matches, scores


def flags(scores: dict[str, np.ndarray], nulls: dict[str, calibrate.NullModel], level: float) -> tuple[np.ndarray, np.ndarray]:
    """(flagged (Q,), smallest per-channel p-value (Q,)): some channel beyond its threshold."""
    flagged = np.zeros(len(next(iter(scores.values()))), bool)
    p_min = np.ones_like(flagged, dtype=float)
    for channel, s in scores.items():
        flagged |= s > nulls[channel].threshold(level)
        p_min = np.minimum(p_min, nulls[channel].p_value(s))
    return flagged, p_min


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
    return membership.attack(*losses, seed=s.seed)


def mask_sources(sset, matches: list[list[Match]], train: Volumes) -> dict | None:
    """Which training masks the synthetic masks came from (by design), and how often the image's nearest training
    study is that same study."""
    if "mask_source" not in sset.table.columns or not sset.table["mask_source"].astype(str).str.len().any():
        return None
    sources = sset.table["mask_source"].astype(str).tolist()
    same = sum(train.ids[m[0].index] == src for m, src in zip(matches, sources))
    return {"from_training_masks": int(sum(src in set(train.ids) for src in sources)),
            "distinct_sources": len(set(sources)), "nearest_image_is_mask_source": int(same)}


def audit(run: str | Path, synth: str | Path, out: str | Path, settings: AuditConfig | None = None, *,
          redact: bool | None = None, device: str = "auto", overwrite: bool = False,
          show_progress: bool = True) -> AuditResult:
    """Audit `synth` (made by `run`) against the run's training studies; write REPORT atomically. `settings` is the
    `audit` config section; `redact` (when given) overrides its `redact` key."""
    start = time.monotonic()
    s = settings or AuditConfig()
    if redact is not None:
        s = AuditConfig(**{**as_dict(s), "redact": redact})
    check_output_dir(out, overwrite)
    loaded, sset = open_with_run(run, synth, resolve_device(device), "audit")
    judged = sset.file_hashes()
    masked = loaded.num_labels > 0
    train, holdout = load_real(loaded, masked, show_progress)
    synthetic = load_synthetic(sset, loaded, masked)

    say = lambda line: stage(f"audit: {line}", show_progress)  # noqa: E731  (a line per stage, in logs too)
    say(f"{len(synthetic.ids)} synthetic studies against {len(train.ids)} training studies; building the gallery")
    gallery = Gallery(train, s, show_progress, smooth=0.0 if masked else 1.0)
    level = calibrate.study_level(s.alpha, len(gallery.channels), len(synthetic.ids))
    say(f"calibrating {len(gallery.channels)} channels on {len(holdout.ids)} held-out studies")
    _, null_scores = gallery.score(holdout.volumes)
    nulls = {c: calibrate.fit_null(c, null_scores[c]) for c in gallery.channels}
    say("scoring the synthetic studies")
    matches, scores = gallery.score(synthetic.volumes)
    flagged, p_min = flags(scores, nulls, level)
    say(f"measuring detection power on {s.copies_per_kind * len(KINDS)} planted copies"
        + ("; then the membership attack" if s.membership else ""))
    power, planted_scores = planted_power(gallery, train, nulls, level, s)
    found = Findings(flagged, p_min, power, closer_to_training(synthetic, train, holdout, s.seed),
                     membership_attack(loaded, train, holdout, s, masked) if s.membership else None,
                     mask_sources(sset, matches, train) if masked else None)
    verdict, reasons = judge(found, s, masked)

    payload = {**report_payload(loaded, sset, s, found, verdict, reasons, nulls, level, gallery.channels,
                                len(train.ids), len(holdout.ids)), "judged_files": judged}
    table = pairs_table(synthetic, train, matches, scores, nulls, found, gallery.channels,
                        sset.table["mask_source"].astype(str).tolist() if masked else None)
    views = report.Views(train, synthetic, matches, p_min, null_scores, scores, planted_scores, nulls, level,
                         gallery.channels)
    files = write_report(out, overwrite, payload, table, views, s.redact)
    summary = payload["summary"]
    return AuditResult(Path(out).expanduser().resolve(), verdict, reasons, len(flagged), int(flagged.sum()),
                       {k: v["recall"] for k, v in power.items()}, summary["min_planted_recall"],
                       summary["membership_auc"], time.monotonic() - start, files)


@dataclass
class Findings:
    """What the audit measured, before the verdict."""

    flagged: np.ndarray          # (Q,) synthetic studies beyond the threshold in some channel
    p_min: np.ndarray            # (Q,) smallest per-channel p-value
    power: dict                  # planted-copy kind -> recall, source found, lowest score per channel
    closer: dict                 # class -> share of synthetic studies closer to training than to holdout
    membership: dict | None      # the membership attack, when run
    mask_sources: dict | None    # mask runs: where the synthetic masks came from


def planted_power(gallery: Gallery, train: Volumes, nulls: dict, level: float, s: AuditConfig) -> tuple[dict, dict]:
    """Recall of planted copies of random training studies, per kind, at the audit's own threshold; and their scores."""
    rng = np.random.default_rng(s.seed + 1)
    sources = rng.choice(len(train.volumes), s.copies_per_kind * len(KINDS))
    fill = lambda v: float(v.flat[0])  # noqa: E731  (a corner voxel: background)
    planted = [plant_copy(train.volumes[i], KINDS[n // s.copies_per_kind], rng, fill(train.volumes[i]))[0].astype(np.float32)
               for n, i in enumerate(sources)]
    planted_matches, planted_scores = gallery.score(planted)
    planted_flagged, _ = flags(planted_scores, nulls, level)
    power = {}
    for n, kind in enumerate(KINDS):
        part = slice(n * s.copies_per_kind, (n + 1) * s.copies_per_kind)
        power[kind] = {"recall": float(planted_flagged[part].mean()),
                       "source_found": float(np.mean([m[0].index == i for m, i in zip(planted_matches[part], sources[part])])),
                       **{f"min_{c}": float(planted_scores[c][part].min()) for c in gallery.channels}}
    return power, planted_scores


def judge(found: Findings, s: AuditConfig, masked: bool) -> tuple[str, list[str]]:
    """PASS, FAIL or INCONCLUSIVE, and the reasons in words."""
    reasons, verdict, mia, power = [], "PASS", found.membership, found.power
    if found.flagged.any():
        verdict = "FAIL"
        reasons.append(f"{int(found.flagged.sum())} of {len(found.flagged)} synthetic studies are closer to a training "
                       f"study than held-out real studies ever are (family-wise error {s.alpha}).")
    if mia and mia["auc_interval"][0] > s.max_membership_auc:
        verdict = "FAIL"
        reasons.append(f"membership inference separates training from held-out studies (AUC {mia['auc']:.2f}, "
                       f"95% interval from {mia['auc_interval'][0]:.2f}, above {s.max_membership_auc}).")
    weak = {k: v["recall"] for k, v in power.items() if v["recall"] < s.min_recall}
    if weak and verdict != "FAIL":
        verdict = "INCONCLUSIVE"
    if weak:
        reasons.append("the audit found too few planted copies to vouch for the set: "
                       + ", ".join(f"{k} {r:.0%}" for k, r in weak.items()) + f" (needs {s.min_recall:.0%}).")
    if verdict == "PASS":
        reasons.append(f"no synthetic study is flagged; every kind of planted copy is found at least "
                       f"{min(v['recall'] for v in power.values()):.0%} of the time at the same threshold.")
    if masked:
        reasons.append("mask-conditioned run: images are compared on what their masks do not explain (the residual "
                       "after each label region's mean, label borders blanked).")
    high = [c for c, d in found.closer.items() if d["interval"][0] > 0.5]
    if high:
        reasons.append("note: synthetic studies sit closer to training than to holdout more often than chance in "
                       + ", ".join(high) + " (a sign of memorisation short of copying).")
    return verdict, reasons


def pairs_table(synthetic: Volumes, train: Volumes, matches: list[list[Match]], scores: dict, nulls: dict,
                found: Findings, channels: tuple[str, ...], mask_source: list[str] | None) -> pd.DataFrame:
    """pairs.csv: per synthetic study its 3 nearest training studies, every channel's score and p-value, the flip and
    shift found, whether it is flagged, and (mask runs) its mask's source."""
    table = pd.DataFrame({"study_id": synthetic.ids, "class": synthetic.classes, "flagged": found.flagged,
                          "p_min": found.p_min})
    for r in range(3):
        table[f"nearest_{r + 1}"] = [train.ids[m[r].index] if len(m) > r else "" for m in matches]
        table[f"pixel_{r + 1}"] = [round(m[r].score, 5) if len(m) > r else np.nan for m in matches]
    for c in channels:
        table[c] = scores[c]
        table[f"p_{c}"] = nulls[c].p_value(scores[c])
    table["flip_axes"] = [" ".join(map(str, m[0].flip_axes)) for m in matches]
    table["shift"] = [" ".join(map(str, m[0].shift)) for m in matches]
    if mask_source is not None:
        table["mask_source"] = mask_source
    return table


def report_payload(loaded: LoadedRun, sset: SyntheticSet, s: AuditConfig, found: Findings, verdict: str,
                   reasons: list[str], nulls: dict, level: float, channels: tuple[str, ...], n_train: int,
                   n_holdout: int) -> dict:
    """report.json: verdict, reasons, summary, calibration, detection power, set-level figures and provenance."""
    power, mia, masked = found.power, found.membership, loaded.num_labels > 0
    summary = {"verdict": verdict, "synthetic_studies": len(found.flagged), "flagged": int(found.flagged.sum()),
               "min_planted_recall": min(v["recall"] for v in power.values()),
               "membership_auc": mia["auc"] if mia else None, "alpha": s.alpha}
    return {
        "verdict": verdict, "reasons": reasons, "summary": summary,
        "compared_on": ("mask-explained residual (image minus each label region's mean, label borders blanked)" if masked
                        else "image (model units)"),
        "calibration": {"rule": f"flag when a channel's Gumbel p-value <= alpha / (channels x studies) = {level:.2e} "
                                "and the score exceeds every holdout score",
                        "channels": {c: nulls[c].summary(level) for c in channels}},
        "detection_power": {"copies_per_kind": s.copies_per_kind, "min_recall": s.min_recall, "kinds": power},
        "closer_to_training": found.closer, "membership": mia, "mask_sources": found.mask_sources,
        "grid": list(loaded.meta["shape"]), "train_studies": n_train, "holdout_studies": n_holdout,
        "provenance": provenance.record("privacy audit", as_dict(s), {
            "run": loaded.path.name, "run_hash": loaded.run_hash, "synthetic_set": sset.folder.name,
            "samples_sha256": sset.table_sha256}, seeds={"audit": s.seed}),
    }


def write_report(out: str | Path, overwrite: bool, payload: dict, table: pd.DataFrame, views: report.Views,
                 redact: bool) -> list[str]:
    """report.json, pairs.csv, report.html (and report_redacted.html), written atomically; returns their names."""
    with atomic_output_dir(out, overwrite) as tmp:
        provenance.write_json(tmp / "report.json", payload)
        table.to_csv(tmp / "pairs.csv", index=False)
        report.write_html(tmp / "report.html", payload, views, redact=False)
        if redact:
            report.write_html(tmp / "report_redacted.html", payload, views, redact=True)
    return ["report.json", "pairs.csv", "report.html"] + (["report_redacted.html"] if redact else [])
