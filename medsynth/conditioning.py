"""The conditioning contract: what a study is conditioned on, built in one place, with its null form.

- Classes: ids 0..num_classes-1 index the run's class names; the id `num_classes` is the null class ("no class"),
  which classifier-free guidance uses as the unconditional branch and training drops to at random.
- Masks: a label map becomes a one-hot tensor (B, K, *spatial) with K = num_labels (label ids 0..K-1, background
  included); all zeros means "no mask". Latent runs pool it to the latent grid (or a ControlNet embeds it).
- Label vocabulary: inside a run, label maps use compact ids 0..K-1; `label_ids` gives the dataset's id of each
  (a parcellation using 149 of the ids 0..207 trains 150 channels, not 208). Files a user reads or gives (real data,
  synthetic label maps, --masks) hold the dataset's ids; `compact` and `expand` convert.

Training, generation, the audit's membership attack and the models all speak `Conditions`; a new kind of condition
(continuous covariates, more categorical columns) is a new field here with its own null form.
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
    """The conditions of a batch: class ids (B,) and/or one-hot masks (B, K, *spatial); None where a run has none."""

    classes: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def null(self, null_class: int) -> "Conditions":
        """The unconditional form of the same batch: every class the null class, every mask all zeros."""
        return Conditions(None if self.classes is None else torch.full_like(self.classes, null_class),
                          None if self.mask is None else torch.zeros_like(self.mask))

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

    def conditions(self, classes: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> Conditions:
        """Conditions from class ids (B,) and label maps (B, *spatial); a part the run is not conditioned on is left
        out, and a part the run has but the caller leaves out is None (the model then uses its null form)."""
        return Conditions(classes if self.num_classes else None,
                          one_hot(labels, self.num_labels) if self.num_labels and labels is not None else None)
