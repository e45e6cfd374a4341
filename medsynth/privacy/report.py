"""The audit's HTML page: one self-contained file (figures embedded as PNG), readable on a laptop screen."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medsynth.pages import STYLE, fmt, png, table  # noqa: E402
from medsynth.privacy.search import align  # noqa: E402
from medsynth.viz import middle_slice  # noqa: E402

COLOURS = {"PASS": "#1b7f3b", "FAIL": "#b3261e", "INCONCLUSIVE": "#b26a00"}


@dataclass
class Views:
    """What the figures draw: the compared volumes, the matches and every channel's scores."""

    train: object
    synthetic: object
    matches: list
    p_min: np.ndarray        # each synthetic study's combined p-value
    null_scores: dict
    scores: dict
    planted_scores: dict
    nulls: dict
    level: float             # the p-value at which one channel alone flags a study
    channels: tuple[str, ...]


def middle(volume: np.ndarray) -> np.ndarray:
    """viz.middle_slice, turned for imshow's default top-left origin."""
    return np.rot90(middle_slice(volume))


def histograms(v: Views) -> str:
    fig, axes = plt.subplots(1, len(v.channels), figsize=(4.2 * len(v.channels), 3.2), squeeze=False)
    for ax, channel in zip(axes[0], v.channels):
        every = np.concatenate([v.null_scores[channel], v.scores[channel], v.planted_scores[channel]])
        bins = np.linspace(every.min(), max(every.max(), 1.0), 40)
        ax.hist(v.null_scores[channel], bins, alpha=0.6, density=True, label="holdout (null)")
        ax.hist(v.scores[channel], bins, alpha=0.6, density=True, label="synthetic")
        ax.hist(v.planted_scores[channel], bins, alpha=0.4, density=True, label="planted copies")
        ax.axvline(v.nulls[channel].threshold(v.level), color="k", linestyle="--", label="threshold")
        ax.set_title(f"{channel}: similarity to nearest training study", fontsize=9)
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7)
    return png(fig)


def closest_pairs(v: Views, redact: bool, count: int = 6) -> str:
    p = v.p_min
    order = np.argsort(p)[:count]
    columns = 1 if redact else 2
    fig, axes = plt.subplots(len(order), columns, figsize=(2.6 * columns, 2.6 * len(order)), squeeze=False)
    for row, q in enumerate(order):
        match = v.matches[q][0]
        axes[row][0].imshow(middle(align(v.synthetic.volumes[q], match)), cmap="gray")
        axes[row][0].set_title(f"{v.synthetic.ids[q]}  p={p[q]:.1e}", fontsize=8)
        if not redact:
            axes[row][1].imshow(middle(v.train.volumes[match.index]), cmap="gray")
            axes[row][1].set_title(f"training {v.train.ids[match.index]}  ncc={match.score:.3f}", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    return png(fig)


def write_html(path: Path, payload: dict, v: Views, redact: bool) -> None:
    """The audit's report.html (or report_redacted.html): verdict, calibration, power, closest pairs, evidence."""
    verdict = payload["verdict"]
    parts = [verdict_html(payload, redact), calibration_html(payload, v, redact), evidence_html(payload)]
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>medsynth audit: {verdict}</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def verdict_html(payload: dict, redact: bool) -> str:
    """The heading, who may see the page, the verdict with its reasons and what was compared."""
    verdict = payload["verdict"]
    parts = ["<h1>medsynth privacy audit</h1>"]
    parts.append('<p class="warn">' + ("Redacted copy: no training images are shown; safe to share with the synthetic set."
                                       if redact else "This report shows training images (closest pairs). Do not share it "
                                       "outside the data's governance; share <code>report_redacted.html</code> instead "
                                       "(written with <code>--redact</code>).") + "</p>")
    parts.append(f'<section><span class="verdict" style="background:{COLOURS[verdict]}">{verdict}</span><ul>'
                 + "".join(f"<li>{html.escape(r)}</li>" for r in payload["reasons"]) + "</ul>"
                 + f"<p>{payload['summary']['synthetic_studies']} synthetic studies audited against "
                 f"{payload['train_studies']} training studies, calibrated on {payload['holdout_studies']} held-out studies; "
                 f"compared on the {html.escape(payload['compared_on'])}, grid {payload['grid']} "
                 f"({html.escape(str(payload.get('audit_grid', {}).get('from', '')))}).</p></section>")
    return "".join(parts)


def calibration_html(payload: dict, v: Views, redact: bool) -> str:
    """The thresholds with their held-out calibration, the planted-copy power ladder and the closest pairs."""
    cal = payload["calibration"]
    power = payload["detection_power"]
    parts = []
    parts.append("<section><h2>Thresholds and how they were calibrated</h2><p>" + html.escape(cal["rule"]) + ". Each "
                 "channel scores a study by its similarity to its nearest training study; the held-out real studies' "
                 "scores against the same training gallery are the null for 'not a copy'.</p>"
                 + table([[c, d["holdout_studies"], fmt(d["holdout_median"]), fmt(d["holdout_max"]), fmt(d["threshold"])]
                          for c, d in cal["channels"].items()],
                         ["channel", "holdout studies", "holdout median", "holdout max", "threshold"])
                 + f'<img alt="similarity histograms" src="{histograms(v)}"></section>')
    parts.append("<section><h2>Detection power (planted copies, this audit)</h2><p>"
                 f"{power['copies_per_rung']} copies of random training studies per rung of the ladder were planted and "
                 f"judged by the same rule; a required rung found less than {power['min_recall']:.0%} of the time makes "
                 "the verdict INCONCLUSIVE. The other rungs show how far a copy may drift before it is missed.</p>"
                 + table([[k, "yes" if d["required"] else "", f"{d['recall']:.0%}", f"{d['source_found']:.0%}"]
                          + [fmt(d[f"min_{c}"]) for c in v.channels] for k, d in power["rungs"].items()],
                         ["rung", "required", "recall", "source found"] + [f"lowest {c}" for c in v.channels])
                 + "</section>")
    parts.append("<section><h2>Closest pairs</h2><p>The synthetic studies with the smallest p-values, aligned to their "
                 "nearest training study (middle slice of the compared volumes).</p>"
                 f'<img alt="closest pairs" src="{closest_pairs(v, redact)}"></section>')
    return "".join(parts)


def evidence_html(payload: dict) -> str:
    """Closer to training than to holdout, membership inference, mask sources and provenance."""
    parts = []
    dcr = payload["closer_to_training"]
    parts.append("<section><h2>Closer to training than to holdout</h2><p>Share of synthetic studies whose nearest real "
                 "study is a training one, training subsampled to the holdout's size (0.5 when the model generalises).</p>"
                 + table([[c, d["studies"], fmt(d["share"]), f"{d['interval'][0]:.2f}-{d['interval'][1]:.2f}"]
                          for c, d in dcr.items()], ["class", "studies", "share", "95% interval"]) + "</section>")
    mia = payload["membership"]
    parts.append("<section><h2>Membership inference</h2>" + (
        table([["ROC AUC", fmt(mia["auc"]), f"{mia['auc_interval'][0]:.2f}-{mia['auc_interval'][1]:.2f}"],
               ["TPR at 1% FPR", fmt(mia["tpr_at_1pct_fpr"]), f"{mia['tpr_interval'][0]:.2f}-{mia['tpr_interval'][1]:.2f}"],
               ["median loss, members / holdout", f"{mia['member_loss_median']:.4f} / {mia['holdout_loss_median']:.4f}", ""],
               *([["highest TPR at 1% FPR any attack can reach (from epsilon)", fmt(mia["tpr_bound_at_1pct_fpr"]), ""],
                  ["highest ROC AUC any attack can reach (from epsilon)", fmt(mia["auc_bound"]), ""]]
                 if "auc_bound" in mia else [])],
              ["loss attack at intermediate noise levels", "value", "95% bootstrap interval"])
        + f"<p>{mia['members']} training and {mia['holdout']} held-out studies. AUC 0.5: the model's loss does not "
        f"tell its training studies apart. The weights: {html.escape(mia.get('privacy', 'not recorded'))}.</p>" if mia else
        f"<p>{html.escape(str(payload.get('membership_not_measured') or 'not run'))}.</p>") + "</section>")
    masks = payload.get("mask_sources")
    if masks:
        parts.append("<section><h2>Mask sources</h2><p>" + f"{masks['from_training_masks']} synthetic label maps were drawn "
                     f"from training masks ({masks['distinct_sources']} distinct; known from "
                     f"{html.escape(str(masks.get('identified_by')))}), by design; the images are audited on "
                     f"what the mask does not explain. For {masks['nearest_image_is_mask_source']} of them the nearest "
                     "training image is the mask's own study. A new image painted on a training mask shares the anatomy "
                     "that mask decides (unlabelled layers, shading), copy or not, so the mask's own study is left out "
                     "of the <i>distinct</i> channel; the other channels compare each image with every training study "
                     "including it. Where the mask decides nearly the whole image (procedural phantoms), a faithful "
                     "new image on a training mask scores like a copy in the pixel, smooth, structure and image "
                     "channels: for a flag whose nearest study is the mask's own, look at the texture channel.</p></section>")
    prov = payload["provenance"]
    parts.append("<section><h2>Provenance</h2>" + table([[k, html.escape(str(val))] for k, val in prov["inputs"].items()]
                                                       + [["medsynth", prov["versions"].get("medsynth", "")]], ["input", "value"])
                 + "</section>")
    return "".join(parts)
