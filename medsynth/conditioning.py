"""The conditioning contract: what a study is conditioned on, built in one place, with its null form.

- Classes: ids 0..num_classes-1 index the run's class names; the id `num_classes` is the null class ("no class"),
  which classifier-free guidance uses as the unconditional branch and training drops to at random.
- Masks: a label map becomes a one-hot tensor (B, K, *spatial) with K = num_labels (label ids 0..K-1, background
  included); all zeros means "no mask". Latent runs pool it to the latent grid (or a ControlNet embeds it).
- Label vocabulary: inside a run, label maps use compact ids 0..K-1; `label_ids` gives the dataset's id of each
  (a parcellation using 149 of the ids 0..207 trains 150 channels, not 208). Files a user reads or gives (real data,
  synthetic label maps, --masks) hold the dataset's ids; `compact` and `expand` convert.

- Extra conditions (`conditioning.classes` beyond the first, `conditioning.covariates`): one number per column and
  study in `Conditions.extra` (B, E): a categorical column's value id, or a covariate standardised with the training
  studies' mean and SD; NaN means "left out" (the column's null form), so guidance works on any subset.

Training, generation, the audit's membership attack and the models all speak `Conditions`; a new kind of condition
is a new field here with its own null form.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medsynth.errors import MedsynthError


def one_hot(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(B, *spatial) integer label maps -> (B, K, *spatial) float one-hot masks, K = num_labels."""
    return F.one_hot(labels.long(), num_labels).movedim(-1, 1).float()


@dataclass(frozen=True)
class Conditions:
    """The conditions of a batch: class ids (B,), one-hot masks (B, K, *spatial) and extra conditions (B, E), NaN
    where left out; None where a run has none."""

    classes: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    extra: torch.Tensor | None = None

    def null(self, null_class: int) -> "Conditions":
        """The unconditional form of the same batch: every class the null class, every mask all zeros, every extra
        condition left out."""
        return Conditions(None if self.classes is None else torch.full_like(self.classes, null_class),
                          None if self.mask is None else torch.zeros_like(self.mask),
                          None if self.extra is None else torch.full_like(self.extra, float("nan")))

    def cat(self, other: "Conditions") -> "Conditions":
        """This batch followed by `other` (the same fields must be present in both)."""
        return Conditions(*(None if a is None else torch.cat([a, b]) for a, b in zip(self._values(), other._values())))

    def select(self, index) -> "Conditions":
        """The conditions of the rows `index` (a slice, index tensor or boolean mask)."""
        return Conditions(*(None if v is None else v[index] for v in self._values()))

    def to(self, device: torch.device | str) -> "Conditions":
        return Conditions(*(None if v is None else v.to(device) for v in self._values()))

    def replace(self, **changes) -> "Conditions":
        return dataclasses.replace(self, **changes)

    @property
    def empty(self) -> bool:
        return all(v is None for v in self._values())

    def _values(self) -> tuple:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))


def category_text(value) -> str:
    """A categorical value as text, whole numbers without a trailing '.0' (a CSV column with blanks reads as floats)."""
    text = str(value).strip()
    return text[:-2] if text.endswith(".0") and text[:-2].lstrip("-").isdigit() else text


@dataclass(frozen=True)
class Column:
    """An extra condition: a categorical catalog column (its values, in id order) or a continuous covariate (the
    training studies' mean, SD, minimum and maximum; the model sees (value - mean) / SD)."""

    name: str
    values: tuple[str, ...] = ()
    stats: tuple[float, float, float, float] | None = None

    @property
    def continuous(self) -> bool:
        return self.stats is not None

    def encode(self, value, where: str = "", extrapolate: bool = False) -> float:
        """A raw value (category name or number) -> the model's number; None, '' or NaN -> NaN (left out). An unknown
        category, or a covariate outside the training range (unless `extrapolate`), is refused naming what is known."""
        if value is None or str(value).strip() in ("", "nan", "None"):
            return float("nan")
        if not self.continuous:
            if category_text(value) not in self.values:
                raise MedsynthError(f"{where}{self.name} {str(value)!r} is not a value the run knows "
                                    f"({', '.join(self.values)}).")
            return float(self.values.index(category_text(value)))
        mean, sd, lo, hi = self.stats
        try:
            number = float(value)
        except ValueError:
            raise MedsynthError(f"{where}{self.name} must be a number, got {value!r}.") from None
        if not extrapolate and not lo <= number <= hi:
            raise MedsynthError(f"{where}{self.name} {number:g} is outside the training range {lo:g} to {hi:g}; "
                                "ask within it, or pass --extrapolate to go beyond what the model saw.")
        return (number - mean) / sd

    def as_dict(self) -> dict:
        return {"name": self.name, "values": list(self.values), "stats": list(self.stats) if self.stats else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Column":
        return cls(d["name"], tuple(d["values"]), tuple(d["stats"]) if d.get("stats") else None)


def vocabulary(declared: Sequence[int], present: Sequence[int]) -> tuple[int, ...]:
    """The label ids a run models: background, every id the dataset names, every id its label maps hold."""
    return tuple(sorted({0, *(int(v) for v in declared), *(int(v) for v in present)}))


@dataclass(frozen=True)
class ConditionSpec:
    """What a model is conditioned on: its class names (the null class comes after them), its mask label count and
    the dataset's id of each mask label (empty: ids 0..num_labels-1 themselves)."""

    class_names: tuple[str, ...] = ()
    num_labels: int = 0      # mask channels (label ids 0..num_labels-1); 0 without mask conditioning
    label_ids: tuple[int, ...] = ()
    extras: tuple[Column, ...] = ()   # extra conditions (categorical columns, covariates), in Conditions.extra order

    @property
    def dataset_ids(self) -> tuple[int, ...]:
        return self.label_ids or tuple(range(self.num_labels))

    def compact(self, labels: np.ndarray) -> np.ndarray:
        """Dataset label ids -> the run's ids 0..K-1 (an id the run never saw becomes background)."""
        ids = np.asarray(self.dataset_ids)
        if np.array_equal(ids, np.arange(len(ids))) and (labels.size == 0 or labels.max() < len(ids)):
            return labels
        index = np.clip(np.searchsorted(ids, labels), 0, len(ids) - 1)
        return np.where(ids[index] == labels, index, 0).astype(np.uint8 if len(ids) <= 256 else np.int16)

    def expand(self, labels: np.ndarray) -> np.ndarray:
        """The run's ids 0..K-1 -> dataset label ids."""
        ids = np.asarray(self.dataset_ids)
        if np.array_equal(ids, np.arange(len(ids))):
            return labels
        return ids[labels].astype(np.uint8 if ids.max() <= 255 else np.int16)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def class_ids(self, values: Sequence[str], where: str = "", unknown_as_null: bool = False) -> torch.Tensor | None:
        """(B,) ids of class names; an unknown name is the null class with `unknown_as_null`, else refused."""
        if not self.class_names:
            return None
        names = list(self.class_names)
        missing = sorted(set(values) - set(names))
        if missing and not unknown_as_null:
            raise MedsynthError(f"{where} has class {missing[0]!r}, which the run does not know "
                                f"(classes: {', '.join(names)}).")
        return torch.tensor([names.index(v) if v in names else self.null_class for v in values], dtype=torch.long)

    def extra_values(self, rows: Sequence[dict], where: str = "", extrapolate: bool = False) -> torch.Tensor | None:
        """(B, E) extra conditions of raw values per study ({column: value}; a column left out is NaN), or None when
        the run has no extra conditions."""
        if not self.extras:
            return None
        return torch.tensor([[c.encode(row.get(c.name), where, extrapolate) for c in self.extras] for row in rows],
                            dtype=torch.float32)

    def conditions(self, classes: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                   extra: torch.Tensor | None = None) -> Conditions:
        """Conditions from class ids (B,), label maps (B, *spatial) and extra conditions (B, E); a part the run is
        not conditioned on is left out, and a part the run has but the caller leaves out is None (the model then
        uses its null form)."""
        return Conditions(classes if self.num_classes else None,
                          one_hot(labels, self.num_labels) if self.num_labels and labels is not None else None,
                          extra if self.extras else None)
