"""The catalog: one row per study (ids, paths, shape, spacing, modality, labels, split), saved as CSV."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from medsynth.data.readers import StudyRef
from medsynth.errors import DataError

CORE_COLUMNS = [
    "study_id", "subject_id", "split", "format", "modality", "channels", "shape", "spacing",
    "label_values", "images", "label", "key", "sha256",
]
PATH_SEPARATOR = "|"

# A catalog folder (what `medsynth ingest --out` writes; a run keeps its own copy of the first two): the catalog, the
# split alone (study_id, split), and the ingest record (settings, label names, where the data came from).
CATALOG_FILE, SPLIT_FILE, INGEST_FILE = "catalog.csv", "split.csv", "ingest.json"


def make_split(subjects: pd.Series, holdout: float, seed: int, strata: pd.Series | None = None) -> pd.Series:
    """Assign 'train' or 'holdout' per subject, seeded, optionally stratified by a class column.

    All studies of one subject land on the same side. Within each stratum, round(holdout * n_subjects)
    subjects are held out (at least one when the stratum has two or more subjects and holdout > 0).
    """
    if not 0.0 <= holdout < 1.0:
        raise DataError(f"holdout fraction must be in [0, 1), got {holdout}.")
    rng = np.random.default_rng(seed)
    per_subject = pd.DataFrame({"subject": subjects.values,
                                "stratum": (strata.astype(str).values if strata is not None else "all")})
    per_subject = per_subject.drop_duplicates("subject")
    held: set = set()
    for _, group in sorted(per_subject.groupby("stratum"), key=lambda item: item[0]):
        names = sorted(group["subject"].tolist())
        n_hold = int(round(holdout * len(names)))
        if holdout > 0 and len(names) >= 2:
            n_hold = min(max(n_hold, 1), len(names) - 1)
        held.update(rng.permutation(names)[:n_hold].tolist())
    return subjects.map(lambda s: "holdout" if s in held else "train")


def build_catalog(refs: list[StudyRef], stats: dict[str, dict], classes: dict[str, dict]) -> pd.DataFrame:
    """Rows in the order of `refs`; `stats` holds what loading each study measured (shape, spacing, hash...)."""
    rows = []
    clashes = sorted({c for values in classes.values() for c in values} & (set(CORE_COLUMNS) - {"subject_id"}))
    if clashes:
        raise DataError(f"label column(s) {clashes} clash with catalog columns of the same name; "
                        "rename them in the labels CSV.")
    for ref in refs:
        labels = dict(classes.get(ref.study_id, {}))
        subject = str(labels.pop("subject_id", "") or ref.subject_id or ref.study_id)
        rows.append({
            "study_id": ref.study_id, "subject_id": subject, "split": "", "format": ref.fmt,
            "images": PATH_SEPARATOR.join(ref.images), "label": ref.label, "key": ref.key,
            **stats[ref.study_id], **labels,
        })
    table = pd.DataFrame(rows)
    extra = [c for c in table.columns if c not in CORE_COLUMNS]
    return table[CORE_COLUMNS + extra]


def class_columns(catalog: pd.DataFrame) -> list[str]:
    """The study-level label and covariate columns (everything the catalog adds beyond its core columns)."""
    return [c for c in catalog.columns if c not in CORE_COLUMNS]


def categorical_columns(catalog: pd.DataFrame) -> list[str]:
    """Study-level columns that look like classes: text with at most 20 values, or integers with at most 5."""
    found = []
    for column in class_columns(catalog):
        values = catalog[column].replace("", pd.NA).dropna()
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and len(values):
            is_class = bool((numeric == numeric.round()).all()) and values.nunique() <= 5
        else:
            is_class = values.nunique() <= 20
        if is_class and column != "source_split":
            found.append(column)
    return found


def catalog_fingerprint(catalog: pd.DataFrame) -> str:
    """SHA-256 over study ids, content hashes, labels and split: changes if any of them changes."""
    columns = ["study_id", "sha256", "split", *class_columns(catalog)]
    text = catalog[columns].sort_values("study_id").to_csv(index=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_catalog(catalog: pd.DataFrame, path: str | Path) -> None:
    catalog.to_csv(path, index=False)


def save_catalog_folder(folder: Path, catalog: pd.DataFrame) -> None:
    """The catalog and its split beside it, as a catalog folder (or a run folder) holds them."""
    save_catalog(catalog, folder / CATALOG_FILE)
    catalog[["study_id", "split"]].to_csv(folder / SPLIT_FILE, index=False)


def is_catalog_folder(folder: Path) -> bool:
    return (folder / CATALOG_FILE).is_file() and (folder / INGEST_FILE).is_file()


def ingest_record(folder: Path) -> dict:
    """A catalog folder's ingest.json."""
    return json.loads((folder / INGEST_FILE).read_text())


def read_catalog_folder(folder: Path) -> tuple[pd.DataFrame, dict[int, str]]:
    """An ingest output folder's catalog (its split taken from split.csv beside it) and label-map names."""
    names = ingest_record(folder).get("label_names", {})
    return with_split_file(read_catalog(folder / CATALOG_FILE), folder), {int(k): v for k, v in names.items()}


def with_split_file(catalog: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """The catalog with the split that `folder`'s split.csv records: the one source of truth for which studies were
    trained on, so a split edited there is the split every stage uses."""
    path = Path(folder) / SPLIT_FILE
    return apply_split(catalog, path) if path.is_file() else catalog


HOLDOUT_NAMES = {"holdout", "test", "val", "validation"}   # a given split's names for "never trained on"


def apply_split(catalog: pd.DataFrame, path: str | Path, complete: bool = True) -> pd.DataFrame:
    """The catalog with its split given by a CSV of study_id and split (train, or holdout / test / val), honoured
    exactly; refused in one sentence when the file names studies the catalog lacks or (`complete`) leaves some out.
    Without `complete`, studies the file leaves out get no split (an empty string) and take no part."""
    path = Path(path)
    try:
        given = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read the split file {path} ({exc}); give a CSV with columns study_id,split.") from None
    if not {"study_id", "split"} <= set(given.columns):
        raise DataError(f"the split file {path} needs the columns study_id and split (it has {list(given.columns)}).")
    values = given["split"].str.strip().str.lower()
    bad = sorted(set(values) - HOLDOUT_NAMES - {"train"})
    if bad:
        raise DataError(f"the split file {path} has split values {bad}; use train, or holdout (test / val).")
    split = dict(zip(given["study_id"].str.strip(), np.where(values == "train", "train", "holdout")))
    unknown = sorted(set(split) - set(catalog["study_id"]))
    missing = sorted(set(catalog["study_id"]) - set(split)) if complete else []
    if unknown or missing:
        what = (f"names {len(unknown)} studies the data does not hold ({', '.join(unknown[:3])})" if unknown else
                f"leaves out {len(missing)} studies of the data ({', '.join(missing[:3])})")
        raise DataError(f"the split file {path} {what}; give exactly one row per study.")
    out = catalog.copy()
    out["split"] = out["study_id"].map(split).fillna("")
    return out


def read_catalog(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"catalog {path} does not exist; run `medsynth ingest DATA --out DIR` first.")
    table = pd.read_csv(path, dtype={"study_id": str, "subject_id": str, "label": str, "key": str}, keep_default_na=False)
    missing = [c for c in CORE_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path} is not a medsynth catalog (missing columns {missing}); re-run ingest.")
    return table


def ref_from_row(row: pd.Series) -> StudyRef:
    """The StudyRef a catalog row describes, so later stages load studies exactly as ingest did."""
    return StudyRef(str(row["study_id"]), str(row["format"]), tuple(str(row["images"]).split(PATH_SEPARATOR)),
                    str(row["label"] or ""), str(row["key"] or ""), str(row["subject_id"]), str(row["modality"]),
                    int(row["channels"]))
