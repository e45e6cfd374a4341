"""manifest.csv (one row per exported file, with its sha256) and dataset_card.md (what a reader needs to know)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from medsynth import provenance
from medsynth.data.catalog import ingest_record
from medsynth.runs import RunFolder
from medsynth.runs.lineage import NOT_PRIVATE, spend_summary

EDITED_USE = ("Training and testing of medical-imaging models inside the institution, or under the agreement, that "
              "governs the source studies. Not for clinical decisions. Not de-identified: treat every file as the "
              "real patient data it was made from.")
INTENDED_USE = ("Training and testing of medical-imaging models, method development and teaching. Not for clinical "
                "decisions about any patient. Every image is synthetic: it shows no real person.")


def manifest_table(root: Path, files: list[dict]) -> pd.DataFrame:
    """files: dicts with path (absolute), study_id, source, format, role and per-study fields; adds sha256."""
    rows = []
    for item in files:
        path = Path(item["path"])
        rows.append({**item, "path": str(path.relative_to(root)), "sha256": provenance.sha256_file(path)})
    columns = ["study_id", "source", "format", "role", "path", "sha256", "class", "labels_present", "seed", "run_hash",
               "synthetic", "intensity_slope", "intensity_intercept", "audit_verdict"]
    table = pd.DataFrame(rows)
    return table.reindex(columns=[c for c in columns if c in table.columns] + [c for c in table.columns if c not in columns])


def training_licence(run: str | None) -> str:
    """The licence the training dataset declares (dataset.json 'licence'), when the run's data can be traced."""
    try:
        data = Path(RunFolder(Path(run)).read_record()["inputs"]["data"])
        source = data if (data / "dataset.json").is_file() else Path(ingest_record(data)["inputs"]["data"])
        return json.loads((source / "dataset.json").read_text()).get("licence") or "not stated in the training dataset"
    except (OSError, KeyError, ValueError, TypeError):
        return "unknown: state the training data's licence before sharing"


def lineage_lines(meta: dict) -> list[str]:
    """The card's lines on the weights' privacy and on every dataset they learnt from (sets made before these were
    recorded say nothing)."""
    lines = [f"- privacy of the weights: {spend_summary(meta.get('privacy') or NOT_PRIVATE)}"]
    for k, item in enumerate(meta.get("trained_on", [])):
        lines.append(f"- {item['role']} `{item['data']}` (catalog fingerprint `{item['catalog_fingerprint']}`"
                     + (f", checkpoint sha256 `{item['run_hash']}`" if item.get("run_hash") else "")
                     + (f"): {item['privacy']}" if k else ")"))
    return lines


def privacy_columns(meta: dict) -> dict:
    """The manifest's per-file privacy columns: epsilon, delta and accountant of the weights (empty without DP)."""
    record = meta.get("privacy") or NOT_PRIVATE
    if record.get("mechanism", "none") == "none":
        return {"dp_epsilon": "", "dp_delta": "", "dp_accountant": ""}
    return {"dp_epsilon": record["epsilon"], "dp_delta": record["delta"],
            "dp_accountant": record["accountant"] + ("" if record.get("private") else " (not private: see the card)")}


def condition_lines(sset) -> list[str]:
    """The card's account of the extra conditions the studies were generated with: counts per category, the range and
    mean of each covariate (also in the manifest and, where DICOM has the attribute, in the files)."""
    lines = []
    for name in sset.condition_names:
        values = sset.table[name]
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().all() and len(values):
            lines.append(f"- {name} (requested): {numbers.min():g} to {numbers.max():g}, mean {numbers.mean():.1f}")
        else:
            lines.append(f"- {name} (requested): " + ", ".join(f"{k}: {v}" for k, v in values.astype(str).value_counts().items()))
    return lines + (["- the requested conditions are facts of the request, not of any patient; DICOM carries them "
                     "where the standard has an attribute (PatientSex, PatientAge, PatientWeight, PatientSize)"] if lines else [])


def dataset_card(sset, table: pd.DataFrame, formats: list[str], audit: dict | None, forced: bool,
                 evaluation: dict | None = None) -> str:
    meta = sset.meta
    synthetic = sset.table
    classes = synthetic["class"].replace("", "(unconditioned)").value_counts().to_dict()
    run = meta["inputs"]["run"]
    edited = sset.holds_real_anatomy
    lines = [
        *([f"# Edited real dataset card ({len(synthetic)} edited real studies)", "",
           "**Every image in this dataset is a real patient's study with a synthetic lesion painted in** (medsynth "
           "edit). Outside each lesion's edit region every voxel is the real study's own. It is **not synthetic and "
           "not de-identified**: use it only under the source data's own governance.", ""] if edited else
          [f"# Synthetic dataset card ({len(synthetic)} synthetic studies)", "",
           "**Every image in this dataset is synthetic.** It was generated by a diffusion model; it shows no real "
           "patient. DICOM files carry Synthetic Data (0008,001C) = YES.", ""]),
        "## Model",
        f"- checkpoint sha256 `{meta['inputs']['run_hash']}`",
        f"- training catalog fingerprint: `{meta['inputs']['catalog_fingerprint']}`",
        f"- modality {sset.modality}; sampler steps {meta['config']['steps']}, guidance {meta['config']['guidance']}, "
        f"seed {meta['seeds']['generate']}",
        f"- network: {meta['training_config']['model']['name']} {meta['training_config']['model']['channels']}, "
        f"{meta['training_config']['diffusion']['process']}, conditioning {meta['training_config']['conditioning']}",
        *lineage_lines(meta),
        "",
        "## Contents",
        f"- formats: {', '.join(formats)}",
        "- studies per class: " + ", ".join(f"{k}: {v}" for k, v in classes.items()),
        *condition_lines(sset),
        f"- label maps: {'yes, ' + ', '.join(f'{k} {v}' for k, v in sset.label_names.items()) if sset.has_labels else 'none'}",
        *([f"- nnU-Net and MSD layouts number the labels 0..{len(sset.label_ids) - 1} (their rule): "
           + ", ".join(f"{k} = id {v}" for k, v in enumerate(sset.label_ids)) + "; the other layouts and the SEG keep "
           "the dataset's ids and names"] if sset.label_ids else []),
        f"- real studies merged in: {table.loc[table['source'] == 'real', 'study_id'].nunique()}",
        f"- QC: {int((~synthetic['qc_passed'].astype(str).str.lower().eq('true')).sum())} studies flagged by generation QC",
        "",
        "## Privacy audit",
    ]
    if edited:
        lines.append("- not applicable: an edited set holds real patients' anatomy, so no audit can clear it for "
                     "sharing.")
    elif audit is None:
        lines.append("- **NOT AUDITED.** Exported with `--force` before any privacy audit: do not share outside the "
                     "institution that holds the training data until `medsynth audit` gives PASS.")
    else:
        lines.append(f"- verdict: **{audit.get('verdict')}**" + (" (exported with --force)" if forced else ""))
        for key, value in audit.get("summary", {}).items():
            lines.append(f"- {key}: {value}")
        lines.append(f"- the report judged exactly these {len(audit.get('judged_files', {}))} synthetic files "
                     "(sha256 checked at export)")
    if evaluation is not None:
        lines += ["", "## Evaluation (next to real data)"]
        for key, value in evaluation.get("summary", {}).items():
            lines.append(f"- {key}: {value}")
    lines += ["", "## Licence of the training data", f"- {training_licence(run)}", "", "## Intended use",
              f"- {EDITED_USE if edited else INTENDED_USE}", "", "## Files",
              "- `manifest.csv`: one row per file with its sha256, study id, role, class, seed and run hash.", ""]
    return "\n".join(lines)
