"""Study-level labels and covariates from a CSV: a case-id column first, then one column per label or covariate."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from medsynth.errors import DataError, first_line

SUBJECT_COLUMN = "subject_id"  # optional: groups several studies of one person for the split


def read_labels_csv(path: str | Path, study_ids: list[str]) -> dict[str, dict]:
    """Read the labels CSV and match it to the dataset's study ids.

    Returns {study_id: {column: value}}. A `subject_id` column, if present, is kept as such.
    Raises DataError on an unreadable file, duplicate ids, or ids the dataset does not hold.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labels CSV {path} does not exist; check the --labels path.")
    check_fields(path)
    try:
        table = pd.read_csv(path, dtype={0: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"labels CSV {path} cannot be parsed ({first_line(err)}); save it as plain CSV.") from None
    if table.shape[1] < 2:
        raise DataError(f"labels CSV {path} needs a case-id column followed by at least one label column.")
    id_column = table.columns[0]
    table[id_column] = table[id_column].astype(str).str.strip()
    duplicated = table[id_column][table[id_column].duplicated()].tolist()
    if duplicated:
        raise DataError(f"labels CSV {path} lists case {duplicated[0]!r} more than once; keep one row per case.")
    unknown = sorted(set(table[id_column]) - set(study_ids))
    if unknown:
        example = ", ".join(repr(u) for u in unknown[:3])
        raise DataError(f"labels CSV {path} names {len(unknown)} case(s) not in the dataset ({example}); "
                        f"its first column ({id_column!r}) must hold the dataset's case ids, e.g. {study_ids[0]!r}.")
    table = table.set_index(id_column)
    return {
        study_id: {column: _plain(value) for column, value in row.items() if not pd.isna(value)}
        for study_id, row in table.iterrows()
    }


def check_fields(path: Path) -> None:
    """Refuse a ragged CSV: every row must have as many fields as the header (pandas would shift or drop values)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"labels CSV {path} cannot be parsed ({first_line(err)}); save it as plain UTF-8 CSV.") from None
    if not rows:
        return
    for line, row in enumerate(rows[1:], start=2):
        if row and len(row) != len(rows[0]):
            raise DataError(f"labels CSV {path} line {line} has {len(row)} fields but its header has {len(rows[0])}; "
                            "give every row one value per column (an empty value stays, as two commas).")


def _plain(value):
    """numpy scalars to Python values, so labels serialise to JSON and compare as users expect."""
    return value.item() if hasattr(value, "item") else value
