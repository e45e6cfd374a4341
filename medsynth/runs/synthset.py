"""Reading a synthetic set (the folder `medsynth generate` writes), alone or with the run that made it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from medsynth import provenance
from medsynth.data.readers.nifti import image_to_channels_first, label_to_spatial, read_nifti
from medsynth.data.study import Study
from medsynth.errors import MedsynthError
from medsynth.runs.layout import SetFolder
from medsynth.runs.loaded import LoadedRun, load_run


EDITED_REAL = "edited-real"


def is_edited_set(path: str | Path) -> bool:
    """Whether `path` is a set `medsynth edit` wrote (its record says set_kind edited-real)."""
    files = SetFolder(Path(path).expanduser())
    if not files.is_set():
        return False
    try:
        return json.loads(files.record.read_text()).get("set_kind") == EDITED_REAL
    except (OSError, ValueError):
        return False


def refuse_edited(path: str | Path, verb: str) -> None:
    """The audit gives an edited set no sharing verdict: one sentence saying why."""
    if is_edited_set(path):
        raise MedsynthError(f"{Path(path).name} is an edited-real set (real patients' anatomy with a synthetic lesion "
                            f"painted in), not synthetic data, so medsynth does not {verb} it for sharing; use it only "
                            "under the source data's own governance.")


@dataclass
class SyntheticSet:
    folder: Path
    table: pd.DataFrame          # samples.csv
    meta: dict                   # generate.json

    @property
    def modality(self) -> str:
        return self.meta["modality"]

    @property
    def kind(self) -> str:
        """'synthetic' (medsynth generate, or another generator's set), or 'edited-real' (medsynth edit: real
        patients' anatomy with a synthetic lesion painted in)."""
        return str(self.meta.get("set_kind", "synthetic"))

    @property
    def holds_real_anatomy(self) -> bool:
        return self.kind == EDITED_REAL

    @property
    def label_names(self) -> dict[int, str]:
        return {int(k): v for k, v in self.meta.get("label_names", {}).items()}

    @property
    def condition_names(self) -> list[str]:
        """The extra conditions each study was generated with (samples.csv columns), beyond its class."""
        return [c["name"] for c in self.meta.get("condition_columns", []) if c["name"] in self.table.columns]

    @property
    def label_ids(self) -> tuple[int, ...] | None:
        """The run's label vocabulary when it is sparse (the dataset id of each compact id), else None."""
        ids = self.meta.get("label_ids")
        return tuple(int(v) for v in ids) if ids else None

    @property
    def has_labels(self) -> bool:
        return bool(self.table["label"].fillna("").astype(str).str.len().gt(0).all())

    @property
    def table_sha256(self) -> str:
        """The hash of samples.csv: names exactly which studies (and files) a report or export speaks of."""
        return provenance.sha256_file(SetFolder(self.folder).table)

    def channel_names(self, channels: int) -> list[str]:
        """What each image channel is called: the set's own names (generate.json), else the modality for one channel
        and 'channel k' for several."""
        names = list(self.meta.get("channel_names") or [])
        if len(names) == channels:
            return names
        return [self.modality] if channels == 1 else [f"channel {k}" for k in range(channels)]

    def files(self) -> list[str]:
        """Every file of the set, relative to its folder: samples.csv, generate.json, and each study's image, label
        map and record."""
        folder, names = SetFolder(self.folder), []
        for _, row in self.table.iterrows():
            names += [row["image"], *([row["label"]] if isinstance(row["label"], str) and row["label"] else [])]
            record = folder.study_record(str(row["study_id"]))
            if record.is_file():
                names.append(record.name)
        return [folder.table.name, folder.record.name, *names]

    def file_hashes(self) -> dict[str, str]:
        """sha256 of every file of the set: what a report that judged the set binds itself to."""
        return {name: provenance.sha256_file(self.folder / name) for name in self.files()}

    def record(self, study_id: str) -> dict:
        return json.loads(SetFolder(self.folder).study_record(study_id).read_text())

    def load(self, row: pd.Series) -> Study:
        image, affine = read_nifti(self.folder / row["image"], "synthetic image")
        label = None
        if isinstance(row["label"], str) and row["label"]:
            label_data, _ = read_nifti(self.folder / row["label"], "synthetic label map")
            label = label_to_spatial(label_data, row["label"]).astype("uint8")
        return Study(image_to_channels_first(image, row["image"]), affine, self.modality, label,
                     study_id=row["study_id"], source=str(self.folder))


def read_synthetic_set(folder: str | Path) -> SyntheticSet:
    folder = Path(folder).expanduser().resolve()
    files = SetFolder(folder)
    if not files.is_set():
        raise MedsynthError(f"{folder} is not a medsynth synthetic set (no samples.csv / generate.json); "
                            "make one with `medsynth generate RUN --out SYNTH`.")
    table = pd.read_csv(files.table, dtype={"study_id": str, "class": str, "label": str}, keep_default_na=False)
    if table.empty:
        raise MedsynthError(f"{folder} holds no synthetic studies.")
    missing = [c for c in ("study_id", "image") if c not in table.columns]
    if missing:
        raise MedsynthError(f"{files.table} has no {' or '.join(missing)} column; samples.csv lists one study per row "
                            "with at least study_id and image (label and class are optional).")
    for optional in ("label", "class"):
        if optional not in table.columns:
            table[optional] = ""
    missing = [f for f in table["image"] if not (folder / f).is_file()]
    if missing:
        raise MedsynthError(f"{folder} lists {missing[0]} in samples.csv but the file is missing; regenerate the set.")
    return SyntheticSet(folder, table, json.loads(files.record.read_text()))


def open_with_run(run: str | Path, synth: str | Path, device, verb: str) -> tuple[LoadedRun, SyntheticSet]:
    """The run and the synthetic set it made, refused in one sentence when the set came from elsewhere.

    `verb` names the command in the message ("audit", "evaluate")."""
    loaded = load_run(run, device)
    sset = read_synthetic_set(synth)
    if sset.modality != loaded.meta["modality"]:
        raise MedsynthError(f"the synthetic set is {sset.modality} but the run was trained on {loaded.meta['modality']}; "
                            f"{verb} a set against the run that generated it.")
    if sset.meta.get("inputs", {}).get("run_hash") not in (None, loaded.run_hash):
        raise MedsynthError(f"{sset.folder} was generated by another checkpoint than {loaded.path}'s; "
                            f"{verb} a set against the run that generated it.")
    return loaded, sset


def studies_on_grid(sset: SyntheticSet, loaded: LoadedRun, verb: str) -> Iterator[tuple[pd.Series, Study, np.ndarray]]:
    """Each synthetic study as (samples.csv row, Study, image in the run's model units (C, *spatial)), refusing any
    study that is not on the run's model grid."""
    shape = tuple(loaded.meta["shape"])
    for _, row in sset.table.iterrows():
        study = sset.load(row)
        if tuple(study.image.shape[1:]) != shape:
            raise MedsynthError(f"synthetic study {row['study_id']} is on a {study.image.shape[1:]} grid but the run's "
                                f"model grid is {shape}; {verb} a set generated by this run.")
        yield row, study, loaded.intensity.to_unit(study.image)
