"""Reading a synthetic set (the folder `medsynth generate` writes) for export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medsynth.data.readers.nifti import image_to_channels_first, label_to_spatial, read_nifti
from medsynth.data.study import Study
from medsynth.errors import MedsynthError


@dataclass
class SyntheticSet:
    folder: Path
    table: pd.DataFrame          # samples.csv
    meta: dict                   # generate.json

    @property
    def modality(self) -> str:
        return self.meta["modality"]

    @property
    def label_names(self) -> dict[int, str]:
        return {int(k): v for k, v in self.meta.get("label_names", {}).items()}

    @property
    def has_labels(self) -> bool:
        return bool(self.table["label"].fillna("").astype(str).str.len().gt(0).all())

    def record(self, study_id: str) -> dict:
        return json.loads((self.folder / f"{study_id}.json").read_text())

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
    if not (folder / "samples.csv").is_file() or not (folder / "generate.json").is_file():
        raise MedsynthError(f"{folder} is not a medsynth synthetic set (no samples.csv / generate.json); "
                            "make one with `medsynth generate RUN --out SYNTH`.")
    table = pd.read_csv(folder / "samples.csv", dtype={"study_id": str, "class": str, "label": str}, keep_default_na=False)
    if table.empty:
        raise MedsynthError(f"{folder} holds no synthetic studies.")
    missing = [f for f in table["image"] if not (folder / f).is_file()]
    if missing:
        raise MedsynthError(f"{folder} lists {missing[0]} in samples.csv but the file is missing; regenerate the set.")
    return SyntheticSet(folder, table, json.loads((folder / "generate.json").read_text()))
