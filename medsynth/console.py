"""Terminal presentation: the rich tables commands print and errors as the one sentence a user reads. No
computation lives here."""

from __future__ import annotations

import sys

import pandas as pd
from rich.console import Console
from rich.table import Table

from medsynth.data.catalog import categorical_columns, class_columns
from medsynth.data.ingest import IngestResult

out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)  # an error is one sentence on one line


def _axis_range(shapes: pd.Series) -> str:
    dims = shapes.str.split("x", expand=True).astype(int)
    return " x ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in zip(dims.min(), dims.max()))


def print_ingest(result: IngestResult, list_all: bool = False, head: int = 10) -> None:
    """The ingest summary: counts, label maps, study-level labels, shapes, spacings, the split, problems."""
    cat = result.catalog
    n_dims = cat["shape"].iloc[0].count("x") + 1
    out.print(f"[bold]{len(cat)} studies[/] ({cat['subject_id'].nunique()} subjects) from {result.kind} "
              f"[bold]{result.name}[/]: {n_dims}D, modality {', '.join(sorted(cat['modality'].unique()))}, "
              f"{cat['channels'].iloc[0]} channel(s)")
    extra = [c for c in class_columns(cat) if c != "source_split"]
    shown = cat if list_all or len(cat) <= head + 5 else cat.head(head)
    table = Table("study", "split", "shape", "spacing (mm)", "label values", *extra, title="Studies")
    for _, row in shown.iterrows():
        table.add_row(row["study_id"], row["split"], row["shape"], row["spacing"], row["label_values"] or "-",
                      *[str(row[c]) for c in extra])
    out.print(table)
    if len(shown) < len(cat):
        out.print(f"  ... and {len(cat) - len(shown)} more (--list shows all)")
    if result.label_names is not None and cat["label_values"].str.len().gt(0).any():
        present = cat["label_values"].str.split(",").explode()
        table = Table("label", "name", "studies containing it", title="Label maps")
        for label_id, name in sorted(result.label_names.items()):
            table.add_row(str(label_id), name, str(int((present == str(label_id)).sum())))
        out.print(table)
    categorical = categorical_columns(cat)
    if categorical:
        table = Table("column", "value", "train", "holdout", "total", title="Study-level labels")
        for column in categorical:
            counts = cat.groupby([column, "split"]).size().unstack(fill_value=0)
            for value, row in counts.iterrows():
                table.add_row(column, str(value), str(row.get("train", 0)), str(row.get("holdout", 0)), str(row.sum()))
        out.print(table)
    spacings = cat["spacing"].value_counts()
    out.print(f"shapes: {cat['shape'].nunique()} distinct, per axis {_axis_range(cat['shape'])}")
    out.print("spacings (mm): " + ", ".join(f"{s} ({n})" for s, n in spacings.head(5).items())
              + (f", ... {len(spacings) - 5} more" if len(spacings) > 5 else ""))
    split = cat["split"].value_counts()
    out.print(f"split: {split.get('train', 0)} train / {split.get('holdout', 0)} holdout (by subject)")
    if result.labels_csv is not None:
        out.print(f"labels from {result.labels_csv}")
    out.print("problems: " + ("none" if not result.problems else ""))
    for problem in result.problems:
        out.print(f"  - {problem}")
    if result.out is not None:
        out.print(f"wrote {result.out}/catalog.csv, split.csv, ingest.json")


def usage_sentence(error: Exception) -> str:
    """typer's complaint about the command line as one sentence, pointing at the command's --help."""
    text = " ".join(error.format_message().split()) if hasattr(error, "format_message") else str(error)
    context = getattr(error, "ctx", None)
    where = f"{context.command_path} --help" if context is not None else "medsynth --help"
    return f"{text.rstrip('.')}; see `{where}`."


def os_sentence(error: OSError) -> str:
    """A disk-full, permission or missing-file error in words, with the path involved."""
    import errno

    hint = {errno.ENOSPC: "free some space or choose another --out", errno.EACCES: "check the folder's permissions",
            errno.EROFS: "choose a writable --out"}.get(error.errno, "")
    what = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    return what + (f" ({hint})." if hint else ".")
