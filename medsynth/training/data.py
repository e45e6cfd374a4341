"""Training data: the catalog's train split, preprocessed once into tensors, with class ids and label maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medsynth.conditioning import Column, ConditionSpec, category_text, one_hot, vocabulary
from medsynth.config import Config
from medsynth.data.catalog import class_columns, is_catalog_folder, read_catalog_folder, ref_from_row
from medsynth.data.ingest import ingest
from medsynth.data.preprocess import PreprocessSpec, preprocess
from medsynth.data.readers import load_study
from medsynth.errors import MedsynthError
from medsynth.models.latent import pool_to_grid
from medsynth.progress import progress_iter


@dataclass
class Catalogued:
    """A catalog with the label-map vocabulary and where it came from."""

    catalog: pd.DataFrame
    label_names: dict[int, str]
    source: str


@dataclass
class TrainingSet:
    """All training studies on the model grid.

    Attributes:
        images: (N, C, *spatial) float32 in [-1, 1].
        labels: (N, *spatial) uint8 label maps, or None.
        classes: (N,) class ids, or None.
        class_names: class id -> the catalog value it stands for.
        num_labels: mask channels (label ids 0..num_labels-1), 0 without mask conditioning.
        intensity_lo / intensity_hi: typical per-channel physical range that maps to [-1, 1] (median over studies).
        spacing: voxel size (mm) of the model grid.
        study_ids: the training studies, in row order.
        label_names: label-map ids to names (the dataset's vocabulary).
        mask_pool: masks are average-pooled by this factor when drawn (a latent model's grid), 1 for pixel models.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: torch.Tensor | None
    class_names: list[str]
    num_labels: int
    intensity_lo: list[float]
    intensity_hi: list[float]
    spacing: list[float]
    modality: str
    study_ids: list[str]
    label_names: dict[int, str]
    mask_pool: int = 1
    label_ids: list[int] | None = None   # the dataset id of each compact label id; None: they are the same
    extras: tuple[Column, ...] = ()      # extra conditions (categorical columns, covariates)
    extra: torch.Tensor | None = None    # (N, E) their values in model units, NaN where a study has none
    extra_rows: list[dict] | None = None  # each study's extra conditions as the catalog gives them (None: blank)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def spec(self) -> ConditionSpec:
        return ConditionSpec(tuple(self.class_names), self.num_labels, tuple(self.label_ids or ()), self.extras)

    def condition_rows(self) -> list[dict]:
        """Each training study's conditions as raw values ({column: value}, the class under "class"): what
        generation draws from, jointly, so a synthetic set keeps the real set's correlations."""
        rows = []
        for k in range(len(self)):
            row = {"class": self.class_names[int(self.classes[k])]} if self.classes is not None else {}
            rows.append({**row, **(self.extra_rows[k] if self.extra_rows else {})})
        return rows

    def one_hot(self, index: torch.Tensor) -> torch.Tensor | None:
        """(B, K, *spatial) one-hot masks of the rows `index`, or None without mask conditioning."""
        if self.labels is None:
            return None
        hot = one_hot(self.labels[index], self.num_labels)
        return pool_to_grid(hot, self.mask_pool) if self.mask_pool > 1 else hot

    def bank_classes(self) -> list[str]:
        """Each study's class name ('' without class conditioning), as the mask bank records it."""
        return [self.class_names[int(c)] for c in self.classes] if self.classes is not None else [""] * len(self)


def open_catalog(data: str | Path, cfg: Config, labels: str | Path | None = None) -> Catalogued:
    """An ingest output folder (catalog.csv + ingest.json) as is, or any dataset path ingested now."""
    data = Path(data).expanduser()
    if is_catalog_folder(data):
        catalog, names = read_catalog_folder(data)
        return Catalogued(catalog, names, str(data.resolve()))
    result = ingest(data, labels=labels, holdout=cfg.data.holdout, seed=cfg.data.split_seed)
    return Catalogued(result.catalog, result.label_names or {}, str(data.resolve()))


def check_conditioning(cat: Catalogued, cfg: Config) -> None:
    """Refuse a config whose conditioning the data cannot support, before anything is written."""
    train = cat.catalog[cat.catalog["split"] == "train"]
    column = cfg.conditioning.class_column
    if column is not None:
        if column not in cat.catalog.columns:
            have = class_columns(cat.catalog)
            raise MedsynthError(f"conditioning.class_column is {column!r} but the data has no such class labels "
                                f"(study-level columns: {', '.join(have) or 'none'}); pass --labels CSV or fix the config.")
        missing = int((train[column].astype(str).str.strip() == "").sum() + train[column].isna().sum())
        if missing:
            raise MedsynthError(f"{missing} training studies have no value in class column {column!r}; "
                                "give every study a class in the labels CSV.")
        refuse_continuous(train[column], column)
    check_extra_columns(cat, train, cfg)
    if cfg.conditioning.mask and (train["label_values"].astype(str).str.strip() == "").any():
        raise MedsynthError("conditioning.mask is on but some training studies have no label map; "
                            "use a dataset with label maps (e.g. MSD labelsTr) or set conditioning.mask: false.")
    dims = {str(s).count("x") + 1 for s in cat.catalog["shape"]}
    if dims != {cfg.spatial_dims}:
        raise MedsynthError(f"the config's data.shape is {cfg.spatial_dims}D but the studies are {dims.pop()}D; "
                            "use a config for that dimensionality (e.g. tiny_2d.yaml or tiny_3d.yaml).")
    if len(train) < cfg.train.batch_size:
        raise MedsynthError(f"only {len(train)} training studies for a batch size of {cfg.train.batch_size}; "
                            "lower train.batch_size or add studies.")


def check_extra_columns(cat: Catalogued, train: pd.DataFrame, cfg: Config) -> None:
    """Every extra condition names a study-level column; categorical ones hold classes, covariates hold numbers."""
    c = cfg.conditioning
    for column in c.extra_columns:
        if column not in cat.catalog.columns:
            have = class_columns(cat.catalog)
            raise MedsynthError(f"conditioning names column {column!r} but the data has no such study-level column "
                                f"(columns: {', '.join(have) or 'none'}); pass --labels CSV or fix the config.")
    for column in c.classes[1:]:
        refuse_continuous(train[column].dropna(), column)
    for column in c.covariates:
        given = train[column][train[column].astype(str).str.strip().isin(["", "nan"]) == False]  # noqa: E712
        numbers = pd.to_numeric(given, errors="coerce")
        if numbers.isna().any():
            raise MedsynthError(f"covariate {column!r} holds {given[numbers.isna()].iloc[0]!r}, not a number; "
                                "give numbers (blank where unknown), or list the column under conditioning.classes.")
        if numbers.nunique() < 2:
            raise MedsynthError(f"covariate {column!r} has fewer than two distinct values over the training studies; "
                                "there is nothing to condition on.")


def extra_conditions(train: pd.DataFrame, cfg: Config) -> tuple[tuple[Column, ...], torch.Tensor | None, list[dict]]:
    """The extra condition columns (values, or the training mean, SD and range of a covariate), their (N, E) values
    in model units (NaN where a study has none) and each study's raw values."""
    c = cfg.conditioning
    if not c.extra_columns:
        return (), None, []
    columns = []
    for column in c.classes[1:]:
        values = {category_text(v) for v in train[column]}
        columns.append(Column(column, tuple(sorted(values - {"", "nan", "None"}))))
    for column in c.covariates:
        numbers = pd.to_numeric(train[column], errors="coerce").dropna()
        columns.append(Column(column, stats=(float(numbers.mean()), float(numbers.std()) or 1.0,
                                             float(numbers.min()), float(numbers.max()))))
    raw = [{col.name: raw_value(col, v) for col, v in zip(columns, row)} for row in train[list(c.extra_columns)].values]
    values = [[col.encode(row[col.name]) for col in columns] for row in raw]
    return tuple(columns), torch.tensor(values, dtype=torch.float32), raw


def raw_value(column: Column, value) -> str | float | None:
    """A catalog cell as a condition: category text or a number, None when blank."""
    text = category_text(value)
    if text in ("", "nan", "None"):
        return None
    return float(text) if column.continuous else text


def refuse_continuous(values: pd.Series, column: str) -> None:
    """A class column must hold classes: numbers with fractions, or more than 20 distinct whole numbers covering over a
    quarter of the studies (an age, a volume), are a continuous value, not classes."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any():
        return
    distinct = numbers.nunique()
    if (numbers != numbers.round()).any() and distinct > 10 or distinct > max(20, len(values) / 4):
        raise MedsynthError(f"conditioning.class_column {column!r} holds {distinct} distinct numbers over {len(values)} "
                            "training studies: a continuous value (a covariate), not classes; condition on a categorical "
                            "column, or bin it into a few classes in the labels CSV.")


def load_training_set(cat: Catalogued, cfg: Config, show_progress: bool = True) -> TrainingSet:
    train = cat.catalog[cat.catalog["split"] == "train"].reset_index(drop=True)
    spec = PreprocessSpec.from_config(cfg.data)
    images, labels, los, his = [], [], [], []
    for _, row in progress_iter(list(train.iterrows()), "preprocessing", enabled=show_progress):
        ready = preprocess(load_study(ref_from_row(row), cat.label_names or None), spec)
        images.append(ready.image)
        labels.append(ready.label[0] if cfg.conditioning.mask else None)
        los.append(ready.intensity.lo)
        his.append(ready.intensity.hi)
        spacing = [float(s) for s in np.linalg.norm(ready.affine[:3, : cfg.spatial_dims], axis=0)]
    class_names, classes = [], None
    if cfg.conditioning.class_column:
        values = train[cfg.conditioning.class_column].astype(str)
        class_names = sorted(values.unique())
        classes = torch.tensor([class_names.index(v) for v in values], dtype=torch.long)
    label_tensor, num_labels, label_ids = None, 0, None
    if cfg.conditioning.mask:
        label_tensor, vocab = compact_labels(torch.stack(labels), cat.label_names)
        num_labels, label_ids = len(vocab), (None if list(vocab) == list(range(len(vocab))) else list(vocab))
    extras, extra, extra_rows = extra_conditions(train, cfg)
    return TrainingSet(torch.stack(images), label_tensor, classes, class_names, num_labels,
                       np.median(los, axis=0).tolist(), np.median(his, axis=0).tolist(), spacing,
                       str(train["modality"].iloc[0]), train["study_id"].tolist(), dict(cat.label_names),
                       label_ids=label_ids, extras=extras, extra=extra, extra_rows=extra_rows)


def compact_labels(labels: torch.Tensor, names: dict[int, str]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(N, *spatial) dataset label ids -> compact ids 0..K-1 over the vocabulary (the ids named and the ids present),
    and the vocabulary (the dataset id of each compact id; 0..K-1 itself for most datasets, left unchanged)."""
    ids = vocabulary(names, torch.unique(labels).tolist())
    if list(ids) == list(range(len(ids))):
        return labels.to(torch.uint8), ids
    spec = ConditionSpec(num_labels=len(ids), label_ids=ids)
    return torch.from_numpy(spec.compact(labels.numpy())), ids     # uint8 (int16 past 256 labels)


def intensity_stats(ts: TrainingSet) -> dict:
    """Per-study mean intensity (model units, channel 0) overall and per label: what generation's QC compares to."""
    images = ts.images[:, 0]
    means = images.flatten(1).mean(1)
    stats = {"global": [float(means.mean()), float(means.std())] if len(ts) > 1 else [float(means.mean()), 0.0],
             "labels": {}}
    if ts.labels is not None:
        for label in range(ts.num_labels):
            per_study = [float(img[lab == label].mean()) for img, lab in zip(images, ts.labels) if (lab == label).any()]
            if len(per_study) >= 2:
                stats["labels"][str(label)] = [float(np.mean(per_study)), float(np.std(per_study))]
    return stats
