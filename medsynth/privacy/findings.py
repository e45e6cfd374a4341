"""What an audit found, its verdict in words, and the report it writes (report.json, pairs.csv, report.html)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medsynth import provenance
from medsynth.config import AuditConfig, as_dict
from medsynth.outputs import atomic_output_dir
from medsynth.privacy import report
from medsynth.privacy.calibrate import Rule


@dataclass
class Findings:
    """What the audit measured, before the verdict."""

    rule: Rule
    p: np.ndarray                # (Q,) each synthetic study's combined p-value
    power: dict                  # rung -> recall, source found, required, lowest score per channel
    closer: dict                 # class -> share of synthetic studies closer to training than to holdout
    membership: dict | None      # the membership attack, when run
    no_membership: str | None    # why it was not run
    mask_sources: dict | None    # mask runs: where the synthetic masks came from

    @property
    def flagged(self) -> np.ndarray:
        return self.rule.flagged(self.p)

    @property
    def certain(self) -> np.ndarray:
        return self.rule.certain(self.p)

    @property
    def excess_p(self) -> float:
        return self.rule.excess_p(int(self.flagged.sum()), len(self.p))


def power_table(planted, rule: Rule, nulls: dict, required: tuple[str, ...]) -> dict:
    """Per rung: recall of its planted copies at the audit's own rule, how often the true source was the nearest
    training study, whether the verdict requires it, and the lowest score per channel."""
    flagged = rule.flagged(rule.p_values(planted.scores, nulls))
    names = np.array([r.name for r in planted.rungs])
    power = {}
    for name in dict.fromkeys(names):
        part = names == name
        found = [m[0].index == i for m, i, keep in zip(planted.matches, planted.sources, part) if keep]
        power[name] = {"recall": float(flagged[part].mean()), "source_found": float(np.mean(found)),
                       "required": name in required,
                       **{f"min_{c}": float(v[part].min()) for c, v in planted.scores.items()}}
    return power


def judge(found: Findings, s: AuditConfig, masked: bool) -> tuple[str, list[str]]:
    """PASS, FAIL or INCONCLUSIVE, and the reasons in words."""
    reasons, verdict, mia, power = [], "PASS", found.membership, found.power
    n, flagged, certain = len(found.p), int(found.flagged.sum()), int(found.certain.sum())
    expected = n * s.study_rate
    if certain:
        verdict = "FAIL"
        reasons.append(f"{certain} of {n} synthetic studies are copies beyond doubt: each is so close to a training study "
                       f"that a set of {n} studies without copies holds one that close less than {s.alpha:.0%} of the time.")
    if found.excess_p <= s.alpha:
        verdict = "FAIL"
        reasons.append(f"{flagged} of {n} synthetic studies are flagged, more than chance explains (about {expected:.1f} "
                       f"expected at the study rate {s.study_rate}; binomial p {found.excess_p:.1e}).")
    elif flagged and not certain:
        reasons.append(f"{flagged} of {n} synthetic studies are flagged (each as close to a training study as at most "
                       f"{s.study_rate:.0%} of real studies that were never trained on), about what chance gives "
                       f"({expected:.1f} expected); they are listed in pairs.csv: look at them, and leave them out "
                       "before sharing if in doubt.")
    if mia and mia["auc_interval"][0] > s.max_membership_auc:
        verdict = "FAIL"
        reasons.append(f"membership inference separates training from held-out studies (AUC {mia['auc']:.2f}, "
                       f"95% interval from {mia['auc_interval'][0]:.2f}, above {s.max_membership_auc}).")
    weak = {k: v["recall"] for k, v in power.items() if v["required"] and v["recall"] < s.min_recall}
    if weak and verdict != "FAIL":
        verdict = "INCONCLUSIVE"
    if weak:
        reasons.append("the audit found too few planted copies to vouch for the set: "
                       + ", ".join(f"{k} {r:.0%}" for k, r in weak.items()) + f" (needs {s.min_recall:.0%}).")
    required = [v["recall"] for v in power.values() if v["required"]]
    if verdict == "PASS":
        reasons.append(f"no synthetic study is a copy beyond doubt and no more are flagged than chance explains; every "
                       f"required rung of planted copies is found at least {min(required, default=1.0):.0%} of the "
                       "time by the same rule.")
    if found.no_membership:
        reasons.append(f"membership inference: {found.no_membership}.")
    if masked:
        reasons.append("mask-conditioned set: images are compared on what their masks do not explain (the residual "
                       "after each label region's mean, label borders blanked), and each image under every candidate "
                       "training study's own mask.")
    high = [c for c, d in found.closer.items() if d["interval"][0] > 0.5]
    if high:
        reasons.append("note: synthetic studies sit closer to training than to holdout more often than chance in "
                       + ", ".join(high) + " (a sign of memorisation short of copying).")
    return verdict, reasons


def pairs_table(synthetic, train, matches: list, scores: dict, nulls: dict, found: Findings,
                channels: tuple[str, ...], mask_source: list[str] | None) -> pd.DataFrame:
    """pairs.csv: per synthetic study its 3 nearest training studies, every channel's score and p-value, the combined
    p-value, the flip and shift found, whether it is flagged, and (mask runs) its mask's source; the conditions it was
    asked for come after its class."""
    table = pd.DataFrame({"study_id": synthetic.ids, "class": synthetic.classes or [""] * len(synthetic.ids),
                          **synthetic.conditions,
                          "flagged": found.flagged, "copy_beyond_doubt": found.certain, "p_combined": found.p})
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


def payload(found: Findings, s: AuditConfig, verdict: str, reasons: list[str], nulls: dict,
            channels: tuple[str, ...], sides) -> dict:
    """report.json: verdict, reasons, summary, calibration, detection power, set-level figures and provenance."""
    power, mia = found.power, found.membership
    required = [v["recall"] for v in power.values() if v["required"]]
    summary = {"verdict": verdict, "synthetic_studies": len(found.p), "flagged": int(found.flagged.sum()),
               "copies_beyond_doubt": int(found.certain.sum()), "excess_p": found.excess_p,
               "min_planted_recall": min(required, default=1.0), "membership_auc": mia["auc"] if mia else None,
               "alpha": s.alpha, "study_rate": s.study_rate,
               **({"model_privacy": mia["privacy"]} if mia and "privacy" in mia else {})}
    level = found.rule.channel_level
    return {
        "verdict": verdict, "reasons": reasons, "summary": summary,
        "compared_on": ("mask-explained residual (image minus each label region's mean, label borders blanked), and "
                        "the image under each candidate's own mask" if sides.masked else "image (model units)"),
        "calibration": {"rule": found.rule.describe(),
                        "channels": {c: {**nulls[c].summary(level), "channel_level": level} for c in channels}},
        "detection_power": {"copies_per_rung": s.copies_per_kind, "min_recall": s.min_recall,
                            "required": list(s.required), "rungs": power},
        "closer_to_training": found.closer, "membership": mia, "membership_not_measured": found.no_membership,
        "mask_sources": found.mask_sources, "grid": sides.grid["shape"], "audit_grid": sides.grid,
        "train_studies": len(sides.train.ids), "holdout_studies": len(sides.holdout.ids),
        "provenance": provenance.record("privacy audit", as_dict(s), sides.inputs, seeds={"audit": s.seed}),
    }


def write_report(out: str | Path, overwrite: bool, body: dict, table: pd.DataFrame, views: report.Views,
                 redact: bool) -> list[str]:
    """report.json, pairs.csv, report.html (and report_redacted.html), written atomically; returns their names."""
    with atomic_output_dir(out, overwrite) as tmp:
        provenance.write_json(tmp / "report.json", body)
        table.to_csv(tmp / "pairs.csv", index=False)
        report.write_html(tmp / "report.html", body, views, redact=False)
        if redact:
            report.write_html(tmp / "report_redacted.html", body, views, redact=True)
    return ["report.json", "pairs.csv", "report.html"] + (["report_redacted.html"] if redact else [])
