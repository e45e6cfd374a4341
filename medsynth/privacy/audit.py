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
from medsynth.privacy import calibrate, encoder, membership, report
from medsynth.privacy.plant import KINDS, plant_copy
from medsynth.privacy.search import Match, align, descriptors, pixel_descriptors, ranked, texture_score
from medsynth.data.catalog import read_catalog, ref_from_row
from medsynth.data.preprocess import PreprocessSpec, preprocess
from medsynth.data.readers import load_study
from medsynth.diffusion.process import NoiseProcess
from medsynth.errors import MedsynthError
from medsynth.outputs import atomic_output_dir, check_output_dir
from medsynth.progress import progress_iter
from medsynth.synthesis.run import open_with_run, studies_on_grid
from medsynth.training.trainer import resolve_device

CHANNELS = ("pixel", "structure", "texture", "embedding")


@dataclass
class Settings:
    alpha: float = 0.05             # family-wise error over the whole set
    copies_per_kind: int = 10
    min_recall: float = 0.9         # planted-copy recall below this (any kind) -> INCONCLUSIVE
    k: int = 10                     # plain-search candidates per descriptor
    embedding: bool = True
    encoder_steps: int = 150
    membership: bool = True
    membership_studies: int = 200   # members and holdout studies scored at most
    max_membership_auc: float = 0.6  # FAIL when the AUC's 95% interval lies above this
    seed: int = 0


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


def unit_range(volume: np.ndarray) -> np.ndarray:
    """1st-99th percentile to [0, 1] (clipped): SSIM needs one data range for every study."""
    lo, hi = np.percentile(volume, [1, 99])
    return np.clip((volume - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def load_real(run_dir: Path, cfg, meta: dict, masked: bool, show_progress: bool,
              min_holdout: int = calibrate.MIN_HOLDOUT, purpose: str = "calibration") -> tuple[Volumes, Volumes]:
    """The run's training and holdout studies, preprocessed as training did."""
    catalog = read_catalog(run_dir / "catalog.csv")
    if "split" not in catalog.columns or not (catalog["split"] == "holdout").any():
        raise MedsynthError(f"the run {run_dir} has no recorded holdout split, which the audit and evaluation compare against; "
                            "retrain with data.holdout > 0 (e.g. --set data.holdout=0.2).")
    holdout = int((catalog["split"] == "holdout").sum())
    if holdout < min_holdout:
        raise MedsynthError(f"the run's holdout split has {holdout} studies but {purpose} needs at least {min_holdout}; "
                            "retrain with a larger data.holdout or more studies.")
    spec = PreprocessSpec(cfg.data.spacing, cfg.data.shape, cfg.data.ct_window, cfg.data.percentiles)
    names = {int(k): v for k, v in meta.get("label_names", {}).items()} or None
    column = cfg.conditioning.class_column
    parts = {}
    for split in ("train", "holdout"):
        rows = catalog[catalog["split"] == split]
        ids, vols, images, labels = [], [], [], []
        for _, row in progress_iter(list(rows.iterrows()), f"loading {split}", enabled=show_progress):
            ready = preprocess(load_study(ref_from_row(row), names if masked else None), spec)
            label = ready.label[0].numpy().astype(np.uint8) if masked and ready.label is not None else None
            ids.append(str(row["study_id"]))
            vols.append(residual(ready.image[0].numpy(), label))
            images.append(ready.image)
            labels.append(label)
        classes = rows[column].astype(str).tolist() if column else []
        parts[split] = Volumes(ids, vols, torch.stack(images), np.stack(labels) if masked else None, classes)
    return parts["train"], parts["holdout"]


def load_synthetic(sset, loaded, masked: bool) -> Volumes:
    ids, vols, classes = [], [], []
    for row, study, unit in studies_on_grid(sset, loaded, "audit"):
        ids.append(str(row["study_id"]))
        vols.append(residual(unit[0], study.label if masked else None))
        classes.append(str(row.get("class", "") or ""))
    return Volumes(ids, vols, classes=classes)


class Gallery:
    """The training studies in every channel, ready to score queries against."""

    def __init__(self, train: Volumes, s: Settings, show_progress: bool, smooth: float = 1.0) -> None:
        self.raw = train.volumes
        self.sigma = smooth
        self.volumes = [self.smoothed(v) for v in self.raw]
        self.descriptors = descriptors(self.volumes)
        self.ssim_ready = [unit_range(v) for v in self.volumes]
        self.dims = self.volumes[0].ndim
        self.ssim = SSIMMetric(spatial_dims=self.dims, data_range=1.0, win_size=min(7, *self.volumes[0].shape) // 2 * 2 + 1)
        self.k = s.k
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
        matches = ranked(smooth, self.volumes, k=self.k, keep=3, gallery_descriptors=self.descriptors)
        structure, texture = [], []
        for query, raw, found in zip(smooth, queries, matches):
            best, fine = -1.0, -1.0
            for m in found:
                a = torch.from_numpy(unit_range(align(query, m)))[None, None]
                b = torch.from_numpy(self.ssim_ready[m.index])[None, None]
                best = max(best, float(self.ssim(a, b).item()))
                fine = max(fine, texture_score(align(raw, m), self.raw[m.index]))
            structure.append(best)
            texture.append(fine)
        scores = {"pixel": np.array([f[0].score for f in matches]), "structure": np.array(structure),
                  "texture": np.array(texture)}
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


def membership_attack(loaded, train: Volumes, holdout: Volumes, s: Settings, masked: bool) -> dict:
    rng = np.random.default_rng(s.seed)

    def inputs(v: Volumes):
        pick = np.sort(rng.choice(len(v.ids), min(len(v.ids), s.membership_studies), replace=False))
        classes = None
        if loaded.class_names:
            classes = torch.tensor([loaded.class_names.index(c) if c in loaded.class_names else loaded.model.null_class
                                    for c in np.array(v.classes)[pick]])
        masks = None
        if masked:
            masks = torch.nn.functional.one_hot(torch.from_numpy(v.labels[pick]).long().clamp(max=loaded.num_labels - 1),
                                                loaded.num_labels).movedim(-1, 1).float()
        return (*loaded.to_model(v.images[pick], masks), classes)

    process = NoiseProcess(loaded.cfg.diffusion)
    losses = []
    for v in (train, holdout):
        images, masks, classes = inputs(v)
        losses.append(membership.study_losses(loaded.model, process, images, classes, masks, seed=s.seed))
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


def audit(run: str | Path, synth: str | Path, out: str | Path, settings: Settings | None = None, *, redact: bool = False,
          device: str = "auto", overwrite: bool = False, show_progress: bool = True) -> AuditResult:
    """Audit `synth` (made by `run`) against the run's training studies; write REPORT atomically."""
    start = time.monotonic()
    s = settings or Settings()
    if not 0 < s.alpha < 1 or not 0 <= s.min_recall <= 1 or s.copies_per_kind < 1 or s.k < 1:
        raise MedsynthError("--alpha must lie between 0 and 1, --min-recall between 0 and 1, and --copies-per-kind "
                            "must be a positive integer.")
    check_output_dir(out, overwrite)
    loaded, sset = open_with_run(run, synth, resolve_device(device), "audit")
    masked = loaded.num_labels > 0
    train, holdout = load_real(loaded.path, loaded.cfg, loaded.meta, masked, show_progress)
    synthetic = load_synthetic(sset, loaded, masked)

    gallery = Gallery(train, s, show_progress, smooth=0.0 if masked else 1.0)
    channels = gallery.channels
    level = calibrate.study_level(s.alpha, len(channels), len(synthetic.ids))
    _, null_scores = gallery.score(holdout.volumes)
    nulls = {c: calibrate.fit_null(c, null_scores[c]) for c in channels}

    matches, scores = gallery.score(synthetic.volumes)
    flagged, p_min = flags(scores, nulls, level)

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
                       **{f"min_{c}": float(planted_scores[c][part].min()) for c in channels}}

    dcr = closer_to_training(synthetic, train, holdout, s.seed)
    mia = membership_attack(loaded, train, holdout, s, masked) if s.membership else None
    masks = mask_sources(sset, matches, train) if masked else None

    reasons, verdict = [], "PASS"
    if flagged.any():
        verdict = "FAIL"
        reasons.append(f"{int(flagged.sum())} of {len(flagged)} synthetic studies are closer to a training study than "
                       f"held-out real studies ever are (family-wise error {s.alpha}).")
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
    high = [c for c, d in dcr.items() if d["interval"][0] > 0.5]
    if high:
        reasons.append("note: synthetic studies sit closer to training than to holdout more often than chance in "
                       + ", ".join(high) + " (a sign of memorisation short of copying).")

    table = pd.DataFrame({"study_id": synthetic.ids, "class": synthetic.classes, "flagged": flagged, "p_min": p_min})
    for r in range(3):
        table[f"nearest_{r + 1}"] = [train.ids[m[r].index] if len(m) > r else "" for m in matches]
        table[f"pixel_{r + 1}"] = [round(m[r].score, 5) if len(m) > r else np.nan for m in matches]
    for c in channels:
        table[c] = scores[c]
        table[f"p_{c}"] = nulls[c].p_value(scores[c])
    table["flip_axes"] = [" ".join(map(str, m[0].flip_axes)) for m in matches]
    table["shift"] = [" ".join(map(str, m[0].shift)) for m in matches]
    if masked:
        table["mask_source"] = sset.table["mask_source"].astype(str).tolist()

    summary = {"verdict": verdict, "synthetic_studies": len(flagged), "flagged": int(flagged.sum()),
               "min_planted_recall": min(v["recall"] for v in power.values()),
               "membership_auc": mia["auc"] if mia else None, "alpha": s.alpha}
    config = {k: getattr(s, k) for k in s.__dataclass_fields__}
    payload = {
        "verdict": verdict, "reasons": reasons, "summary": summary,
        "compared_on": ("mask-explained residual (image minus each label region's mean, label borders blanked)" if masked
                        else "image (model units)"),
        "calibration": {"rule": f"flag when a channel's Gumbel p-value <= alpha / (channels x studies) = {level:.2e} "
                                "and the score exceeds every holdout score",
                        "channels": {c: nulls[c].summary(level) for c in channels}},
        "detection_power": {"copies_per_kind": s.copies_per_kind, "min_recall": s.min_recall,
                            "kinds": power},
        "closer_to_training": dcr, "membership": mia, "mask_sources": masks,
        "grid": list(loaded.meta["shape"]), "train_studies": len(train.ids), "holdout_studies": len(holdout.ids),
        "provenance": provenance.record("privacy audit", config, {
            "run": str(loaded.path), "run_hash": loaded.run_hash, "synthetic_set": str(sset.folder),
            "samples_sha256": provenance.sha256_file(sset.folder / "samples.csv")}, seeds={"audit": s.seed}),
    }
    views = report.Views(train, synthetic, matches, p_min, null_scores, scores, planted_scores, nulls, level, channels)
    with atomic_output_dir(out, overwrite) as tmp:
        provenance.write_json(tmp / "report.json", payload)
        table.to_csv(tmp / "pairs.csv", index=False)
        report.write_html(tmp / "report.html", payload, views, redact=False)
        if redact:
            report.write_html(tmp / "report_redacted.html", payload, views, redact=True)
    files = ["report.json", "pairs.csv", "report.html"] + (["report_redacted.html"] if redact else [])
    return AuditResult(Path(out).expanduser().resolve(), verdict, reasons, len(flagged), int(flagged.sum()),
                       {k: v["recall"] for k, v in power.items()}, summary["min_planted_recall"], mia["auc"] if mia else None,
                       time.monotonic() - start, files)
