"""The evaluation's HTML page: metric bars with intervals, real vs synthetic sample grids, the resolved config."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medsynth.pages import STYLE, fmt, png, table, with_interval  # noqa: E402
from medsynth.viz import draw_study  # noqa: E402

REAL, SYNTH = "#4c72b0", "#dd8452"


def paired_bars(groups: list[str], real: list, synthetic: list, ylabel: str, real_name: str = "real",
                real_err=None, synth_err=None) -> str:
    """Side-by-side bars (real reference, synthetic) per group, with optional (low, high) error intervals."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(groups) + 2), 3.0))
    x = np.arange(len(groups))
    for offset, values, errors, colour, name in ((-0.2, real, real_err, REAL, real_name),
                                                  (0.2, synthetic, synth_err, SYNTH, "synthetic")):
        v = np.array([np.nan if a is None else a for a in values], float)
        ax.bar(x + offset, np.nan_to_num(v), 0.4, yerr=whiskers(v, errors), capsize=3, color=colour, label=name)
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return png(fig)


def bounds(intervals) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) arrays from (low, high) intervals, NaN where an interval or one of its ends is missing."""
    return tuple(np.array([np.nan if e is None or e[i] is None else e[i] for e in intervals], float) for i in (0, 1))


def whiskers(values: np.ndarray, errors) -> np.ndarray | None:
    """matplotlib's yerr (2, N) from (low, high) intervals; None without intervals, zero where one is missing."""
    if errors is None:
        return None
    lo, hi = bounds(errors)
    return np.nan_to_num(np.stack([values - lo, hi - values]).clip(0))


def ratio_bars(fid: dict) -> str:
    """The Frechet ratio per plane in both feature spaces with its 95% interval, against the real floor at 1."""
    planes = list(fid)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(planes) + 2), 3.0))
    x = np.arange(len(planes))
    for offset, rows, colour, name in ((-0.2, [fid[p] for p in planes], SYNTH, "contrastive encoder"),
                                       (0.2, [fid[p].get("second", {}) for p in planes], "#55a868", "supervised features")):
        v = np.array([np.nan if r.get("frechet_ratio") is None else r["frechet_ratio"] for r in rows], float)
        ax.bar(x + offset, np.nan_to_num(v), 0.4, yerr=whiskers(v, [r.get("frechet_ratio_interval") for r in rows]),
               capsize=3, color=colour, label=name)
    ax.axhline(1, color=REAL, linestyle="--", linewidth=1, label="real floor (train vs holdout)")
    ax.set_xticks(x, planes, fontsize=8)
    ax.set_ylabel("Frechet distance / real floor")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    return png(fig)


def utility_bars(utility: dict) -> str:
    names = list(utility["sets"])
    fig, axes = plt.subplots(1, len(utility["metrics"]), figsize=(4.6 * len(utility["metrics"]), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], utility["metrics"]):
        means = [utility["sets"][n][metric]["mean"] for n in names]
        lo = [utility["sets"][n][metric]["interval"][0] for n in names]
        hi = [utility["sets"][n][metric]["interval"][1] for n in names]
        yerr = np.stack([np.subtract(means, lo), np.subtract(hi, means)]).clip(0)
        ax.bar(range(len(names)), means, yerr=yerr, capsize=4, color=[REAL, SYNTH, "#55a868"][: len(names)])
        ax.set_xticks(range(len(names)), [n.replace(" + ", "\n+ ") for n in names], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(metric.replace("_", " "), fontsize=9)
    return png(fig)


def sample_grid(real, synthetic, class_names: list[str], columns: int = 6) -> str:
    """Top row(s) real holdout, bottom row(s) synthetic: middle axial slices, label contours where there are maps."""
    def pick(study, n):
        if study.classes is not None:
            per = max(1, n // max(1, len(class_names)))
            index = np.concatenate([np.flatnonzero(study.classes == c)[:per] for c in range(len(class_names))])
        else:
            index = np.arange(min(n, len(study.images)))
        return index[:n]

    rows = []
    for name, study in (("real holdout", real), ("synthetic", synthetic)):
        rows.append((name, study, pick(study, columns)))
    fig, axes = plt.subplots(2, columns, figsize=(1.8 * columns, 4.0), squeeze=False)
    for r, (name, study, index) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c >= len(index):
                continue
            title = name if c == 0 else ""
            if study.classes is not None:
                title = (title + "\n" if title else "\n") + class_names[study.classes[index[c]]]
            draw_study(ax, study.images[index[c], 0], None if study.labels is None else study.labels[index[c]], title, 8)
    fig.tight_layout()
    return png(fig)


def lift_chart(family: dict) -> str:
    """Each recipe's lift with its 95% interval against zero (a forest plot), one panel per lift the family has."""
    recipes = list(family["recipes"])
    panels = [(k, name) for k, name in (("lift", family["metric"].replace("_", " ") + " lift"),
                                        ("matched_lift", "recall lift at real only's specificity"),
                                        ("auc_lift", "rare-class ROC AUC lift"))
              if all(k in d for d in family["recipes"].values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 2.2, 0.32 * len(recipes) + 1.2),
                             squeeze=False, sharey=True)
    y = np.arange(len(recipes))[::-1]
    for ax, (key, name) in zip(axes[0], panels):
        rows = [family["recipes"][r][key] for r in recipes]
        v = np.array([np.nan if d["mean"] is None else d["mean"] for d in rows], float)
        low, high = bounds([d["interval"] for d in rows])
        colours = ["#55a868" if lo > 0 else "#c44e52" if hi < 0 else "#8c8c8c" for lo, hi in zip(low, high)]
        ax.hlines(y, low, high, colors=colours, linewidth=2)
        ax.scatter(v, y, color=colours, zorder=3, s=18)
        ax.axvline(0, color="#333333", linestyle="--", linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].set_yticks(y, recipes, fontsize=7)
    fig.tight_layout()
    return png(fig)


def family_table(family: dict) -> str:
    """Per recipe: the metric of each training set and the paired lift (real + synthetic minus real only)."""
    metric = family["metric"]
    shown = lambda d: "-" if d["mean"] is None else f"{d['mean']:.3f} ({d['interval'][0]:.3f} to {d['interval'][1]:.3f})"  # noqa: E731
    names = [n for n in next(iter(family["recipes"].values())) if not n.endswith("lift")]
    extra = [(k, title) for k, title in (("matched_lift", "lift at real only's specificity"), ("auc_lift", "AUC lift"))
             if all(k in d for d in family["recipes"].values())]   # classification since sessions 27 and 25
    rows = [[recipe, *[shown(d[n][metric]) for n in names], shown(d["lift"]), *[shown(d[k]) for k, _ in extra]]
            for recipe, d in family["recipes"].items()]
    note = (" The lift at real only's specificity is the recall each model reaches, read off its ROC curve, when it "
            "calls no more of the other classes rare than the real-only model of the same seed does: recall bought with "
            "false positives does not count there." if "matched_lift" in dict(extra) else "")
    note += (" The AUC lift is the same paired difference in the rare class's ROC AUC, which no decision threshold "
             "changes: a recall lift without an AUC lift means the model calls the rare class more often, not that it "
             "tells the classes apart better." if "auc_lift" in dict(extra) else "")
    if "added" in family:
        dose = f" (dose {family['dose']:g} of each mix's count)" if family.get("dose", 1) < 1 else ""
        note += " Synthetic studies added to the real ones: " + ", ".join(
            f"{n} in the {m} mix" for m, n in family["added"].items()) + dose + "."
    return (f"<p>{html.escape(metric)} on real holdout, mean and 95% t interval over {family['seeds']} seeds; the lift is "
            f"paired by seed. The verdict says helps only when every recipe's lift interval lies above zero.{note}</p>"
            + f"<img alt='lift per recipe' src='{lift_chart(family)}'>"
            + "<p>Each recipe's lift with its 95% interval (green: above zero, red: below, grey: crosses it).</p>"
            + table(rows, ["recipe", *names, "lift", *[title for _, title in extra]]))


def conditions_table(conditions: dict) -> str:
    """Per extra condition: a judge trained on real training studies reads it back from synthetic studies (against
    the requested value) and from real holdout (against the true value)."""
    rows = []
    for name, d in conditions.items():
        if "values" in d:
            rows += [[f"{name} = {v}", "accuracy", fmt(x["synthetic"]), fmt(x["holdout"]), x["synthetic_studies"]]
                     for v, x in d["values"].items()]
        else:
            for key, label in (("mae", "mean absolute error"), ("pearson_r", "Pearson r")):
                rows.append([name, label, fmt(d["synthetic"][key]), fmt(d["holdout"][key]), d["synthetic"]["studies"]])
    return ("<p>Categorical conditions: a MONAI Classifier's accuracy per requested value next to its recall on real "
            "holdout. Covariates: a regressor's error and correlation against the requested value, next to the same "
            "against the true value of real holdout studies.</p>"
            + table(rows, ["condition", "figure", "synthetic", "real holdout", "synthetic studies"]))


def section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def write_html(path: Path, payload: dict, train, holdout, synthetic, class_names: list[str]) -> None:
    """The evaluation's report.html: every figure next to the same figure for real data, with pictures."""
    parts = [summary_html(payload, holdout, synthetic, class_names), fidelity_html(payload),
             *conditioning_html(payload), *utility_html(payload), provenance_html(payload["provenance"])]
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>medsynth evaluation</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def summary_html(payload: dict, holdout, synthetic, class_names: list[str]) -> str:
    """The heading, the warning that real images are shown, the summary table and the sample grid."""
    s = payload["summary"]
    intro = (f"<h1>medsynth evaluation</h1><p>{payload['studies']['synthetic']} synthetic {payload['modality']} studies "
             f"on a {' x '.join(map(str, payload['grid']))} grid, compared with {payload['studies']['holdout']} real "
             f"held-out studies (the model trained on {payload['studies']['train']}). Every figure stands next to the "
             "same figure for real data.</p>"
             "<p class='warn'>This page shows held-out real images. Share it only where those images may be seen.</p>")
    rows = [["Frechet distance (mean over planes; lower is closer to real)", fmt(s["frechet_synthetic"]),
             fmt(s["frechet_real"]) + " (real train vs holdout)"],
            *([["Frechet distance as a multiple of the real floor (95% interval over resampled studies): contrastive "
                "encoder / supervised features", f"{ratio_text(s, '')} / {ratio_text(s, '_second')}",
                "1 (real train vs holdout)"]]
              if s.get("frechet_ratio") is not None and s.get("frechet_ratio_second") is not None else []),
            ["MS-SSIM among pairs (higher is less diverse)", fmt(s["ms_ssim_synthetic"]), fmt(s["ms_ssim_real"]) + " (real pairs)"]]
    if "class_accuracy_synthetic" in s:
        rows.append(["classified as requested class (mean over classes)", fmt(s["class_accuracy_synthetic"]),
                     fmt(s["class_accuracy_holdout"]) + " (real holdout)"])
    if "dice_synthetic" in s:
        rows.append(["segmenter Dice against the conditioning mask", fmt(s["dice_synthetic"]),
                     fmt(s["dice_holdout"]) + " (real holdout)"])
    for key, values in s.items():
        if key.startswith("utility_"):
            rows.append([f"utility: {key[8:].replace('_', ' ')} on real holdout",
                         "; ".join(f"{n}: {fmt(v)}" for n, v in values.items()), ""])
    return (intro + section("Summary", table(rows, ["measure", "synthetic", "real reference"]))
            + section("Samples", f"<img alt='real and synthetic samples' src='{sample_grid(holdout, synthetic, class_names)}'>"))


def ratio_text(d: dict, suffix: str) -> str:
    """A Frechet ratio with its bootstrap interval (key frechet_ratio{suffix} and frechet_ratio{suffix}_interval)."""
    return with_interval(d.get(f"frechet_ratio{suffix}"), d.get(f"frechet_ratio{suffix}_interval"))


def fidelity_html(payload: dict) -> str:
    """Frechet distance and KID per plane in both feature spaces, intensities per region, diversity."""
    fid = payload["fidelity"]
    planes = list(fid)
    parts = [section("Fidelity: distance to real in a learned feature space", (
        f"<p>Feature space: {html.escape(payload['feature_space'])}. Real reference: as many training studies as there "
        "are synthetic ones, against the same holdout (Frechet distance depends on sample size; KID does not). The ratio "
        "to that floor comes with a 95% interval: +-1.96 SD of the ratio over the synthetic studies drawn again with "
        "replacement (the real sets held), the spread another draw of as many studies from the same model would show."
        "</p>" + compared_text(next(iter(fid.values())).get("compared"), payload.get("class_names") or [])
        + f"<img alt='Frechet distance per plane' src='{paired_bars(planes, [fid[p]['frechet_real'] for p in planes], [fid[p]['frechet_synthetic'] for p in planes], 'Frechet distance to holdout', 'real train')}'>"
        + f"<img alt='Frechet ratio to the real floor per plane, with 95% intervals' src='{ratio_bars(fid)}'>"
        + table([[p, fmt(d["frechet_synthetic"]), fmt(d["frechet_real"]), ratio_text(d, ""),
                  f"{d['kid_synthetic']:.4f} +- {d['kid_synthetic_sd']:.4f}", f"{d['kid_real']:.4f} +- {d['kid_real_sd']:.4f}"]
                 for p, d in fid.items()],
                ["plane", "Frechet synthetic", "Frechet real", "ratio (95% interval)", "KID synthetic", "KID real"])
        + (f"<p>Second feature space: {html.escape(payload['feature_space_second'])}.</p>"
           + table([[p, fmt(d["second"]["frechet_synthetic"]), fmt(d["second"]["frechet_real"]),
                     ratio_text(d["second"], ""), fmt(d["second"]["kid_synthetic"]), fmt(d["second"]["kid_real"]),
                     fmt(d["second"]["kid_ratio"])] for p, d in fid.items()],
                   ["plane", "Frechet synthetic", "Frechet real", "ratio (95% interval)", "KID synthetic", "KID real",
                    "ratio"])
           if "feature_space_second" in payload else "")))]
    inten = payload["intensity"]
    parts.append(section("Intensities per region", (
        "<p>Wasserstein-1 distance between pooled voxel intensities (model units, -1 to 1) of each region, synthetic vs "
        "holdout next to real train vs holdout; synthetic regions use the synthetic study's own label map.</p>"
        + table([[r, fmt(d["wasserstein_synthetic"]), fmt(d["wasserstein_real"]), fmt(d["synthetic_mean"]), fmt(d["holdout_mean"])]
                 for r, d in inten.items()], ["region", "W1 synthetic", "W1 real", "mean synthetic", "mean holdout"]))))
    div = payload["diversity"]
    groups = list(div)
    if groups:
        parts.append(section("Diversity", (
            "<p>MS-SSIM (MONAI, up to 3 scales to fit the grid) of random pairs within each group, mean with 95% interval. "
            "Synthetic pairs much more alike than real pairs mean mode collapse.</p>"
            + f"<img alt='MS-SSIM' src='{paired_bars(groups, [div[g]['real']['mean'] for g in groups], [div[g]['synthetic']['mean'] for g in groups], 'MS-SSIM among pairs', 'real', [div[g]['real']['interval'] for g in groups], [div[g]['synthetic']['interval'] for g in groups])}'>")))
    return "".join(parts)


def conditioning_html(payload: dict) -> list[str]:
    """Does each study show its class, its mask, its conditions: one section per kind the run has."""
    parts, conditioning = [], payload["conditioning"]
    if "class" in conditioning:
        cond = conditioning["class"]
        names = list(cond["classes"])
        parts.append(section("Conditioning: is each study the class it was asked to be?", (
            f"<p>Judge: {html.escape(cond['judge'])}. Share of synthetic studies it assigns to their requested class, next "
            "to its recall on real holdout studies of that class.</p>"
            + f"<img alt='class accuracy' src='{paired_bars(names, [cond['classes'][n]['holdout'] for n in names], [cond['classes'][n]['synthetic'] for n in names], 'classified as requested', 'real holdout')}'>"
            + table([[n, fmt(d["synthetic"]), fmt(d["holdout"]), d["synthetic_studies"]] for n, d in cond["classes"].items()],
                    ["class", "synthetic", "real holdout", "synthetic studies"]))))
    if "mask" in conditioning:
        cond = conditioning["mask"]
        names = list(cond["labels"])
        get = lambda n, k: cond["labels"][n][k]  # noqa: E731
        parts.append(section("Conditioning: does the image follow its mask?", (
            f"<p>Judge: {html.escape(cond['judge'])}. Dice of its segmentation of each synthetic image against the mask the "
            "image was painted onto, next to its Dice on real holdout studies (mean, 95% interval over studies).</p>"
            + f"<img alt='Dice per label' src='{paired_bars(names, [get(n, 'holdout')['mean'] for n in names], [get(n, 'synthetic')['mean'] for n in names], 'Dice', 'real holdout', [get(n, 'holdout')['interval'] for n in names], [get(n, 'synthetic')['interval'] for n in names])}'>")))
    if conditioning.get("conditions"):
        parts.append(section("Conditioning: does each study show the conditions it was asked for?",
                             conditions_table(conditioning["conditions"])))
    return parts


def utility_html(payload: dict) -> list[str]:
    """Utility per kind (real / synthetic / real + synthetic) and over the downstream recipe family."""
    parts = []
    for kind, util in payload["utility"].items():
        parts.append(section(f"Utility ({'classification' if kind == 'class' else 'segmentation'}): does training on it help?", (
            f"<p>{html.escape(util['model'])} trained on each set with the same number of steps, tested on {util['test']}, "
            f"{util['seeds']} seeds; mean with 95% t interval over seeds.</p>"
            + f"<img alt='utility' src='{utility_bars(util)}'>"
            + table([[n] + [f"{d[m]['mean']:.3f} ({d[m]['interval'][0]:.3f}-{d[m]['interval'][1]:.3f})" for m in util["metrics"]]
                     for n, d in util["sets"].items()], ["training set"] + util["metrics"]))))
    if not payload["utility"]:
        parts.append(section("Utility", "<p>Not measured (unconditional run, or --no-utility).</p>"))
    for kind, family in payload.get("utility_family", {}).items():
        views = "".join(f"; {label}: {family[key]}" for key, label in (
            ("matched_verdict", "at real only's specificity"), ("auc_verdict", "in rare-class AUC")) if key in family)
        parts.append(section(f"Utility over every downstream recipe ({kind}): {family['verdict']}{views}",
                             family_table(family) + gap_table(family.get("domain_gap"))))
    return parts


def provenance_html(prov: dict) -> str:
    return section("Settings and provenance", (
        table([[k, html.escape(str(v))] for k, v in prov["inputs"].items()], ["input", "value"])
        + "<pre>" + html.escape(json.dumps(prov["config"], indent=1)) + "</pre>"
        + f"<p>medsynth {prov['versions'].get('medsynth')}, torch {prov['versions'].get('torch')}, "
          f"MONAI {prov['versions'].get('monai')}; {html.escape(str(prov.get('created', '')))}</p>"))


def compared_text(record: dict | None, names: list[str]) -> str:
    """The fidelity's class-for-class comparison in a sentence (older reports, and runs without classes: none)."""
    if not record or not record.get("class_matched"):
        return ""
    counts = ", ".join(f"{names[int(c)] if int(c) < len(names) else c} {d['synthetic']} of {d['holdout']} in holdout"
                       for c, d in record["classes"].items())
    return (f"<p>Compared class for class: the synthetic studies and the reference drawn to the holdout's class shares "
            f"({html.escape(counts)}), so the set's class mix is not what is measured.</p>")


def gap_table(gap: dict | None) -> str:
    """The domain gap (domain_gap.py): real vs synthetic ROC AUC per class and network (older reports: none)."""
    if not gap:
        return ""
    rows = [[name, network, f"{d['mean']:.3f} ({d['interval'][0]:.3f} to {d['interval'][1]:.3f})",
             f"{d['trained_on'][0]} + {d['trained_on'][1]}", f"{d['scored_on'][0]} + {d['scored_on'][1]}"]
            for name, by_network in gap.items() for network, d in by_network.items()]
    return (f"<p>{html.escape(GAP_NOTE)}</p>"
            + table(rows, ["class", "network", "real vs synthetic AUC (95%)", "trained on (real + synthetic)",
                           "scored on (real + synthetic)"]))


GAP_NOTE = ("Can each network of the family tell the synthetic studies from real ones? Trained on real training studies "
            "of a class against as many synthetic ones, scored on the class's real holdout against other synthetic studies: "
            "ROC AUC 0.5 means it cannot. A network that can sees a mark of the synthetic studies, and what it learns from "
            "them may not carry to real patients: expect less from the synthetic set for that network's recipes.")
