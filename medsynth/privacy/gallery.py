"""The training gallery: every training study in each channel the audit compares, and the scores of queries.

Channels (higher: more alike the nearest training study):
  - pixel: NCC under axis flips and shifts of up to MAX_SHIFT voxels (medsynth.privacy.search);
  - smooth: the aligned pair's NCC after a SMOOTH_VOXELS blur (finds copies that were blurred and re-noised, as a
    generator that regenerates a training image makes them);
  - distinct: the pixel score of the nearest training study minus that of the second nearest (a copy sits next to
    one patient, a new study between many: where every study looks alike, as in procedural phantoms, this is what
    tells a blurred copy from a new study);
  - structure: SSIM (MONAI) of the aligned pair;
  - texture: block NCC of the high-passed pair with local shifts (finds warped and rotated copies);
  - embedding: cosine in a contrastive encoder trained on the training studies;
  - image (mask-conditioned sets only): the query image's residual under each candidate training study's own label
    map against that study's residual, so a copied image is found whether or not it follows the mask beside it.
Mask-conditioned sets compare residuals (image minus each label region's mean, label borders blanked) in the
other channels: a synthetic image painted onto a training mask shares that mask's shape by design. It shares more:
whatever the mask decides that its labels do not name (a fat layer under the body outline, shading), so the study
whose mask it was drawn on is left out of its distinct channel (Gallery.score).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.metrics import SSIMMetric
from scipy import ndimage

from medsynth.config import AuditConfig
from medsynth.models import encoder
from medsynth.privacy.plant import Rung, ladder, plant_copy
from medsynth.privacy.descriptors import descriptors
from medsynth.privacy.search import Match, align, ranked, texture_score
from medsynth.progress import LogLines, progress_iter

CHANNELS = ("pixel", "smooth", "distinct", "structure", "texture", "embedding")
SMOOTH_VOXELS = 2.0   # the smooth channel compares aligned pairs after this Gaussian blur
MAX_SHIFT = 3         # voxels of shift the exact search tries along each axis
INTENSITY_ONLY = ("exact", "noise", "intensity", "blur_noise")   # rungs that leave every voxel where it was


@dataclass
class Volumes:
    """Studies on the audit grid: the volumes the channels compare (channel 0, or its residual) plus metadata."""

    ids: list[str]
    volumes: list[np.ndarray]
    images: torch.Tensor | None = None     # (N, C, *spatial) model units (membership, the image channel)
    labels: np.ndarray | None = None       # (N, *spatial) label maps
    classes: list[str] = field(default_factory=list)
    conditions: dict[str, list] = field(default_factory=dict)   # extra condition -> each study's value (synthetic sets)


def residual(volume: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """`volume` minus the mean of each label region (its own label map): what the mask does not explain.

    A one-voxel band either side of every label border is set to 0 as well: there the partial-volume edge follows
    the mask's shape, which a mask-conditioned sample shares with its mask's source by design."""
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


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / max(np.sqrt((a @ a) * (b @ b)), 1e-12))


def smooth_score(query: np.ndarray, source: np.ndarray) -> float:
    """NCC of an aligned pair after both are blurred by SMOOTH_VOXELS: a blurred, re-noised copy agrees with its
    source at this scale although its fine detail is gone. Voxels that are background in both (each volume's corner
    value: padding, air, what a shift filled in) are left out: every pair agrees there, which would lift unrelated
    studies' scores towards a copy's."""
    keep = (query != query.flat[0]) | (source != source.flat[0])
    if not keep.any():
        return 0.0
    a, b = (ndimage.gaussian_filter(np.asarray(v, np.float32), SMOOTH_VOXELS)[keep] for v in (query, source))
    return ncc(a, b)


def distinct(found: list[Match], source: int | None = None) -> float:
    """The nearest training study's pixel score minus the second nearest's, leaving out `source` (the training
    study a mask-conditioned study's mask was drawn from): a new image painted on a training mask shares the anatomy
    that mask decides (unlabelled layers, shading) and stands out from every other training study by design."""
    rest = [m for m in found if m.index != source]
    return rest[0].score - (rest[1].score if len(rest) > 1 else -1.0)


def label_sources(train_labels: np.ndarray, holdout_labels: np.ndarray, query_labels: np.ndarray) -> list[int | None]:
    """For sets that do not say where their masks came from: each query's training study whose label map matches the
    query's (under flips and shifts) more closely than any held-out label map matches any training label map, or
    None: the masks that were drawn from training studies."""
    gallery = [np.asarray(lab, np.float32) for lab in train_labels]
    index = descriptors(gallery)
    best = lambda labels: [f[0] for f in ranked([np.asarray(lab, np.float32) for lab in labels], gallery,  # noqa: E731
                                                max_shift=MAX_SHIFT, keep=1, gallery_descriptors=index)]
    bar = max(m.score for m in best(holdout_labels))
    return [m.index if m.score > bar else None for m in best(query_labels)]


class Gallery:
    """The training studies in every channel, ready to score queries against."""

    def __init__(self, train: Volumes, s: AuditConfig, show_progress: bool, smooth: float = 1.0) -> None:
        self.raw = train.volumes
        self.sigma, self.show_progress = smooth, show_progress
        self.volumes = [self.smoothed(v) for v in self.raw]
        self.descriptors = descriptors(self.volumes)
        self.ssim_ready = [unit_range(v) for v in self.volumes]
        self.dims = self.volumes[0].ndim
        self.ssim = SSIMMetric(spatial_dims=self.dims, data_range=1.0, win_size=min(7, *self.volumes[0].shape) // 2 * 2 + 1)
        self.k, self.refine = s.k, 2 * s.k
        self.labels = train.labels
        if self.labels is not None:    # the image channel: the training images themselves, searched plainly
            self.images = [ndimage.gaussian_filter(im[0].numpy(), 1.0) for im in train.images]
            self.image_index = descriptors(self.images)
            self.image_residuals = [residual(im, lab) for im, lab in zip(self.images, self.labels)]
        self.encoder, self.encoder_seconds = None, 0.0
        if s.embedding:
            start, stack = time.perf_counter(), np.stack(self.raw)[:, None]
            self.encoder = encoder.train_encoder(stack, steps=s.encoder_steps, seed=s.seed, show_progress=show_progress)
            self.embeddings = encoder.embed(self.encoder, stack)
            self.encoder_seconds = time.perf_counter() - start

    def smoothed(self, volume: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(volume, self.sigma) if self.sigma else volume

    @property
    def channels(self) -> tuple[str, ...]:
        names = CHANNELS if self.encoder is not None else CHANNELS[:-1]
        return names + (("image",) if self.labels is not None else ())

    def search(self, queries: list[np.ndarray], index, gallery, what: str = "searching") -> list[list[Match]]:
        lines = LogLines(f"audit: {what}", len(queries), unit="studies") if self.show_progress else None
        found = ranked(queries, gallery, k=self.k, max_shift=MAX_SHIFT, keep=3, gallery_descriptors=index,
                       refine=self.refine, chunk=64, on_chunk=lines.update if lines else None)
        if lines:
            lines.close()
        return found

    def score(self, queries: list[np.ndarray], images: list[np.ndarray] | None = None,
              sources: list[int | None] | None = None) -> tuple[list[list[Match]], dict[str, np.ndarray]]:
        """Each query's top pixel matches and its score in every channel. `images` (mask-conditioned sets: each
        query's image itself, not its residual) feed the image channel. `sources` (mask-conditioned sets): the
        training study (row) each query's mask was drawn from, left out of its distinct channel."""
        sources = sources or [None] * len(queries)
        smooth = [self.smoothed(q) for q in queries]
        matches = self.search(smooth, self.descriptors, self.volumes)
        pair = {c: [] for c in ("smooth", "structure", "texture")}
        for query, raw, found in progress_iter(list(zip(smooth, queries, matches)), "audit: comparing aligned pairs",
                                               enabled=self.show_progress):
            best = self.pair_scores(query, raw, found)
            for c in pair:
                pair[c].append(best[c])
        scores = {"pixel": np.array([f[0].score for f in matches]), **{c: np.array(v) for c, v in pair.items()},
                  "distinct": np.array([distinct(f, src) for f, src in zip(matches, sources)])}
        if self.encoder is not None:
            z = encoder.embed(self.encoder, np.stack(queries)[:, None], flips=True)   # (Q, flips, D)
            scores["embedding"] = (z @ self.embeddings.T).max(axis=(1, 2))
        if self.labels is not None:
            scores["image"] = self.image_scores(images if images is not None else queries, matches)
        return matches, {c: scores[c] for c in self.channels}

    def pair_scores(self, query: np.ndarray, raw: np.ndarray, found: list[Match]) -> dict[str, float]:
        """The best structure, texture and smooth scores over a query's matches, each pair aligned as matched."""
        best = {c: -1.0 for c in ("smooth", "structure", "texture")}
        for m in found:
            a = torch.from_numpy(unit_range(align(query, m)))[None, None]
            b = torch.from_numpy(self.ssim_ready[m.index])[None, None]
            best["structure"] = max(best["structure"], float(self.ssim(a, b).item()))
            best["texture"] = max(best["texture"], texture_score(align(raw, m), self.raw[m.index]))
            best["smooth"] = max(best["smooth"], smooth_score(align(raw, m), self.raw[m.index]))
        return best

    def image_scores(self, images: list[np.ndarray], residual_matches: list[list[Match]]) -> np.ndarray:
        """Per query, the best over candidates (nearest by the image itself, and by residual) of the NCC between the
        query's residual under the candidate's own label map and the candidate's residual (both images smoothed by
        one voxel, as the image-mode pixel channel compares them)."""
        smoothed = [ndimage.gaussian_filter(im, 1.0) for im in images]
        found = self.search(smoothed, self.image_index, self.images)
        out = []
        for image, by_image, by_residual in zip(smoothed, found, residual_matches):
            best = -1.0
            for m in [*by_image, *by_residual]:
                aligned = align(image, m, fill=float(image.flat[0]))
                best = max(best, ncc(residual(aligned, self.labels[m.index]), self.image_residuals[m.index]))
            out.append(best)
        return np.array(out)


@dataclass
class Planted:
    """The ladder of planted copies: which training study each copy came from, at which rung, and its scores."""

    rungs: list[Rung]
    sources: np.ndarray
    matches: list[list[Match]]
    scores: dict[str, np.ndarray]


def plant_ladder(gallery: Gallery, train: Volumes, copies: int, seed: int) -> Planted:
    """`copies` copies of random training studies at every rung (mask sets: the mismatched rung too), scored."""
    masked = train.labels is not None
    rungs = [r for r in ladder(masked) for _ in range(copies)]
    rng = np.random.default_rng(seed + 1)
    sources = rng.choice(len(train.volumes), len(rungs))
    queries, images, masks = [], [], []
    for rung, i in zip(rungs, sources):
        if masked:   # the residual and the image changed alike; mismatched: the image under another study's mask
            image, state = train.images[i][0].numpy(), rng.bit_generator.state
            images.append(plant_copy(image, rung, rng, float(image.flat[0]))[0].astype(np.float32))
            if rung.kind == "mismatched":
                other = int(rng.integers(len(train.volumes) - 1))
                masks.append(other + (other >= i))
                queries.append(residual(images[-1], train.labels[masks[-1]]))
                continue
            masks.append(int(i))
            if rung.kind in INTENSITY_ONLY:   # the mask stays where it was: the changed image under it
                queries.append(residual(images[-1], train.labels[i]))
            else:                               # the mask moves with the image: the residual moved alike
                rng.bit_generator.state = state
                queries.append(plant_copy(train.volumes[i], rung, rng, 0.0)[0].astype(np.float32))
        else:
            fill = float(train.volumes[i].flat[0])   # a corner voxel: background
            queries.append(plant_copy(train.volumes[i], rung, rng, fill)[0].astype(np.float32))
    matches, scores = gallery.score(queries, images if masked else None, masks if masked else None)
    return Planted(rungs, sources, matches, scores)
