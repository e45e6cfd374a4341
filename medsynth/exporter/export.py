"""Export a synthetic set as NIfTI, DICOM (+SEG), nnU-Net, MSD or a MONAI datalist, atomically, with provenance."""

from __future__ import annotations

import os
import dataclasses
import re
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth import provenance
from medsynth.conditioning import ConditionSpec
from medsynth.config import ExportConfig, with_keys
from medsynth.data.catalog import ref_from_row
from medsynth.data.ingest import ingest
from medsynth.data.readers import load_study
from medsynth.errors import MedsynthError
from medsynth.exporter import layouts
from medsynth.exporter.dicom import patient_attributes, uid, write_seg, write_series
from medsynth.exporter.gate import check_bound, read_report
from medsynth.exporter.manifest import dataset_card, manifest_table, privacy_columns
from medsynth.outputs import atomic_output_dir
from medsynth.progress import progress_iter
from medsynth.runs.synthset import SyntheticSet, read_synthetic_set

FORMATS = ("nifti", "dicom", "nnunet", "msd", "monai")
EDITED_VERDICT = "NOT APPLICABLE (edited real studies, not de-identified)"


@dataclass
class ExportResult:
    out: Path
    formats: list[str]
    files: int
    megabytes: float
    seconds: float
    audit_verdict: str


def dicom_case(task: dict) -> list[dict]:
    """Worker: one study's image series, one per channel (+ SEG on the first), under task['folder']; returns its
    manifest entries."""
    sset: SyntheticSet = task["sset"]
    study = sset.load(task["row"])
    keys = {k: uid(task["run_hash"], study.study_id, k) for k in ("study", "series", "frame", "seg_series")}
    keys["body_part"] = task["body_part"]
    keys["patient"] = patient_attributes({c: task["row"].get(c) for c in sset.condition_names})
    folder = Path(task["folder"]) / study.study_id
    names, files, first = sset.channel_names(study.channels), [], None
    for c in range(study.channels):
        # channel 0 keeps the single-channel layout and UIDs; further channels are series of their own
        series = "image" if c == 0 else f"image_{c}"
        series_keys = {**keys, **({} if c == 0 else {"series": uid(task["run_hash"], study.study_id, f"series {c}")}),
                       "series_number": c + 1, "channel": names[c] if study.channels > 1 else ""}
        volume = study.image[c] if study.spatial_dims == 3 else study.image[c][..., None]
        datasets, scaling = write_series(folder / series, volume, study.affine, study.modality, series_keys,
                                         task["number"], task["software"], task["image_type"])
        first = first or datasets
        files += [{"path": folder / series / f"IM{k + 1:05d}.dcm", "role": "dicom image", "channel": names[c],
                   "intensity_slope": scaling["slope"], "intensity_intercept": scaling["intercept"]}
                  for k in range(len(datasets))]
    if study.label is not None:
        labels = study.label if study.spatial_dims == 3 else study.label[..., None]
        write_seg(folder / "seg.dcm", labels, first, sset.label_names, keys, task["software"])
        files.append({"path": folder / "seg.dcm", "role": "dicom seg"})
    return [{**f, "study_id": study.study_id} for f in files]


def _check(sset: SyntheticSet, formats: list[str], audit: dict | None, force: bool) -> None:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise MedsynthError(f"--format must be one or more of {', '.join(FORMATS)}; got {', '.join(unknown) or 'none'}.")
    if {"nnunet", "msd"} & set(formats) and not sset.has_labels:
        raise MedsynthError("nnU-Net and MSD layouts need label maps, and this synthetic set has none "
                            "(a class-conditioned run); export it as nifti, dicom or monai.")
    if sset.holds_real_anatomy:
        if "dicom" in formats:
            raise MedsynthError("this is an edited-real set (real patients' anatomy with a synthetic lesion painted in) "
                                "and medsynth writes DICOM only for synthetic studies, which it gives new identities "
                                "and marks synthetic; export it as nifti, nnunet, msd or monai.")
        if audit is not None:
            raise MedsynthError("an edited-real set gets no privacy audit (it holds real patients' anatomy); export it "
                                "without --audit, for use under the source data's own governance.")
        return
    verdict = (audit or {}).get("verdict")
    if verdict != "PASS" and not force:
        raise MedsynthError(("this synthetic set has no privacy audit" if audit is None else f"its audit verdict is {verdict}")
                            + "; run `medsynth audit` and pass --audit REPORT, or export anyway with --force.")


def export(synth: str | Path, out: str | Path, formats: list[str] | None = None, config: ExportConfig | None = None, *,
           audit: str | Path | None = None, evaluation: str | Path | None = None, with_real: str | Path | None = None,
           real_labels: str | Path | None = None, overwrite: bool = False, show_progress: bool = True,
           **keys) -> ExportResult:
    """Write the formats of the synthetic set under `out` (plus manifest.csv, dataset_card.md, export.json).

    `config` is the `export` config section; `formats` and keyword arguments (force=, image_type=, dataset_id=,
    name=, body_part=, workers=) override its keys."""
    start = time.monotonic()
    c = with_keys(config or ExportConfig(), {**keys, **({"formats": formats} if formats is not None else {})})
    sset = read_synthetic_set(synth)
    report, evaluated = read_report(audit, "audit"), read_report(evaluation, "evaluation")
    current = sset.file_hashes() if report is not None or evaluated is not None else None
    for payload, source, what in ((report, audit, "audit"), (evaluated, evaluation, "evaluation")):
        if payload is not None:   # even with --force: a card never cites another set's report
            check_bound(payload, sset, source, what, current)
    formats = list(dict.fromkeys(c.formats))
    _check(sset, formats, report, c.force)
    if not re.fullmatch(r"[A-Z0-9 _]{1,16}", c.body_part):
        raise MedsynthError(f"--body-part must be a DICOM defined term such as ABDOMEN, CHEST, HEAD or BRAIN, got {c.body_part!r}.")
    real = ingest(with_real, labels=real_labels, show_progress=False).catalog if with_real else None
    name = layouts.dataset_name(c.name or f"MedSynth {sset.modality}")
    verdict = EDITED_VERDICT if sset.holds_real_anatomy else (report or {}).get("verdict", "NOT AUDITED")
    with atomic_output_dir(out, overwrite) as tmp:
        files = _write_layouts(tmp, sset, real, [f for f in formats if f != "dicom"], c.dataset_id, name, show_progress)
        if "dicom" in formats:
            files += _write_dicom(tmp, sset, c, show_progress)
        table = _write_index(tmp, sset, files, formats, report, evaluated, c, name, with_real, verdict)
        megabytes = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) / 1e6
    return ExportResult(Path(out).expanduser().resolve(), formats, len(table), megabytes, time.monotonic() - start, verdict)


def _write_dicom(root: Path, sset: SyntheticSet, c: ExportConfig, show_progress: bool) -> list[dict]:
    """Every study's DICOM series (+ SEG), written by worker processes; returns their manifest entries."""
    run_hash, software = sset.meta["inputs"]["run_hash"], provenance.versions()["medsynth"]
    tasks = [{"sset": sset, "row": row, "run_hash": run_hash, "folder": root / "dicom", "number": int(row["index"]) + 1,
              "software": software, "image_type": c.image_type, "body_part": c.body_part}
             for _, row in sset.table.iterrows()]
    files = []
    # DICOM encoding is CPU-bound: worker processes, which leave Ctrl-C to this one; on any stop they are ended here
    pool = ProcessPoolExecutor(max_workers=c.workers or os.cpu_count(), initializer=_ignore_sigint)
    try:
        for entries in progress_iter(pool.map(dicom_case, tasks), "DICOM series", show_progress, len(tasks)):
            files += [{**e, "source": "synthetic", "format": "dicom"} for e in entries]
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return files


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _write_index(root: Path, sset: SyntheticSet, files: list[dict], formats: list[str], report: dict | None,
                 evaluated: dict | None, c: ExportConfig, name: str, with_real, verdict: str):
    """manifest.csv, dataset_card.md and export.json for the files written."""
    run_hash = sset.meta["inputs"]["run_hash"]
    per_study = {r["study_id"]: r for _, r in sset.table.iterrows()}
    for item in files:
        study = per_study.get(item["study_id"])
        if study is not None:
            item.update({"class": study["class"], **{c: study.get(c) for c in sset.condition_names},
                         "seed": study["seed"], "run_hash": run_hash,
                         "synthetic": not sset.holds_real_anatomy,
                         "audit_verdict": verdict, **privacy_columns(sset.meta)})
    table = manifest_table(root, files)
    table.to_csv(root / "manifest.csv", index=False)
    (root / "dataset_card.md").write_text(dataset_card(sset, table, formats, report, c.force and verdict != "PASS",
                                                       evaluated))
    provenance.write_json(root / "export.json", provenance.record(
        "export", {"formats": formats, "image_type": c.image_type, "dataset_id": c.dataset_id, "name": name,
                   "body_part": c.body_part, "with_real": Path(with_real).name if with_real else None, "force": c.force,
                   "workers": c.workers},
        {"synthetic_set": sset.folder.name, "run_hash": run_hash, "samples_csv_sha256": sset.table_sha256,
         "evaluation": (evaluated or {}).get("summary")},
        local_paths=False, seeds={"generate": sset.meta["seeds"]["generate"]},
        audit={"verdict": verdict, **(report or {}).get("summary", {})},
        privacy=sset.meta.get("privacy"), trained_on=sset.meta.get("trained_on")))
    return table


def consecutive(study, sset: SyntheticSet):
    """The study with label ids 0..K-1 (nnU-Net and MSD need them) when the set's vocabulary is sparse."""
    if study.label is None or not sset.label_ids:
        return study
    spec = ConditionSpec(num_labels=len(sset.label_ids), label_ids=sset.label_ids)
    return dataclasses.replace(study, label=spec.compact(study.label))


def _write_layouts(root: Path, sset: SyntheticSet, real, formats: list[str], dataset_id: int, name: str,
                   show_progress: bool) -> list[dict]:
    """NIfTI-based layouts: the synthetic studies (and merged real ones), then each layout's index file."""
    files: list[dict] = []
    max_label, channels = max(sset.label_names, default=0), [sset.modality]
    cases: dict[str, list[tuple[str, str]]] = {f: [] for f in formats}
    descrip, description = layouts.texts(sset.holds_real_anatomy)
    studies = [(row["study_id"], sset.kind, row["class"], lambda row=row: sset.load(row)) for _, row in sset.table.iterrows()]
    if real is not None:
        studies += [(f"real_{row['study_id']}", "real", "", lambda row=row: load_study(ref_from_row(row)))
                    for _, row in real.iterrows()]
    for case, source, class_name, load in progress_iter(studies, "NIfTI layouts", enabled=show_progress and bool(formats)):
        study = load() if formats else None
        for fmt in formats:
            if fmt in ("nnunet", "msd") and study.label is None:
                raise MedsynthError(f"real study {case} has no label map, which the {fmt} layout needs; "
                                    "drop --with-real or give labelled data.")
            image_dir, label_dir, suffix = layouts.label_folders(fmt)
            written = layouts.write_nifti_files(layouts.layout_root(root, fmt, dataset_id, name),
                                                consecutive(study, sset) if fmt in ("nnunet", "msd") else study, case,
                                                image_dir, label_dir, suffix, descrip if source != "real" else "")
            labels_present = ",".join(str(v) for v in np.unique(study.label)) if study.label is not None else ""
            channels = sset.channel_names(study.channels)
            for k, path in enumerate(written["images"]):
                files.append({"path": path, "study_id": case, "source": source, "format": fmt, "role": "nifti image",
                              "channel": channels[k] if len(written["images"]) > 1 else ", ".join(channels),
                              "labels_present": labels_present})
            if written["label"] is not None:
                files.append({"path": written["label"], "study_id": case, "source": source, "format": fmt,
                              "role": "nifti label", "labels_present": labels_present})
            cases[fmt].append((case, class_name))
            if study.label is not None:
                max_label = max(max_label, int(study.label.max()))
    for fmt, entries in cases.items():
        root_fmt = layouts.layout_root(root, fmt, dataset_id, name)
        names = {}
        if sset.has_labels and fmt in ("nnunet", "msd") and sset.label_ids:   # their label ids must run 0..K-1
            names = {k: sset.label_names.get(v, f"label_{v}") for k, v in enumerate(sset.label_ids)}
        elif sset.has_labels:
            names = layouts.label_table(sset.label_names, max_label)
        if fmt == "nnunet":
            layouts.nnunet_dataset_json(root_fmt, len(entries), sset.modality, names, name, channels, description)
        elif fmt == "msd":
            layouts.msd_dataset_json(root_fmt, [c for c, _ in entries], sset.modality, names, name,
                                     len(sset.meta["training_config"]["data"]["shape"]), channels, description)
        elif fmt == "monai":
            layouts.monai_datalist(root_fmt, [
                {"image": f"images/{c}.nii.gz", **({"label": f"labels/{c}.nii.gz"} if sset.has_labels else {}),
                 "class": k, "source": "real" if c.startswith("real_") else sset.kind} for c, k in entries])
        if fmt in ("nnunet", "msd", "monai"):
            files.append({"path": root_fmt / ("datalist.json" if fmt == "monai" else "dataset.json"), "study_id": "",
                          "source": "index", "format": fmt, "role": "index"})
    return files
