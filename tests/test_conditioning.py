"""The conditioning contract: one-hot masks, the null form for guidance, class names to ids."""

from __future__ import annotations

import pytest
import torch

from medsynth.conditioning import Conditions, ConditionSpec, one_hot
from medsynth.errors import MedsynthError


def test_one_hot_masks_have_one_channel_per_label_and_sum_to_one():
    labels = torch.tensor([[[0, 1], [2, 2]]])                       # (1, 2, 2), labels 0..2
    hot = one_hot(labels, 3)
    assert hot.shape == (1, 3, 2, 2) and hot.dtype == torch.float32
    assert torch.equal(hot.sum(1), torch.ones(1, 2, 2)) and torch.equal(hot.argmax(1), labels)


def test_the_null_form_drops_every_condition_and_keeps_the_batch():
    cond = Conditions(torch.tensor([0, 1]), one_hot(torch.zeros(2, 4, 4, dtype=torch.long), 3))
    null = cond.null(null_class=2)
    assert torch.equal(null.classes, torch.tensor([2, 2])) and not null.mask.any() and null.mask.shape == cond.mask.shape
    both = cond.cat(null)
    assert len(both.classes) == 4 and both.mask.shape[0] == 4
    assert torch.equal(both.select(slice(2, 4)).classes, null.classes)
    assert Conditions().empty and not cond.empty and Conditions().null(2).empty


def test_a_spec_builds_conditions_and_maps_class_names():
    spec = ConditionSpec(("lesion", "normal"), num_labels=3)
    assert spec.null_class == 2
    assert torch.equal(spec.class_ids(["normal", "lesion"]), torch.tensor([1, 0]))
    assert torch.equal(spec.class_ids(["tumour"], unknown_as_null=True), torch.tensor([2]))
    with pytest.raises(MedsynthError, match="'tumour', which the run does not know"):
        spec.class_ids(["tumour"], "samples.csv")
    cond = spec.conditions(torch.tensor([0]), torch.ones(1, 4, 4, dtype=torch.long))
    assert cond.mask.shape == (1, 3, 4, 4) and cond.mask[0, 1].all()
    unconditioned = ConditionSpec()
    assert unconditioned.class_ids(["x"]) is None and unconditioned.conditions(torch.tensor([0])).empty
