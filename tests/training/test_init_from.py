"""Fine-tuning from a finished run (--init-from / train.init_from): the starting weights, the loss it starts at, the
record of both datasets downstream, and the layers that do not fit."""

import json

import pandas as pd
import pytest
import torch

from conftest import assert_user_error, run_cli
from medsynth import provenance
from medsynth.config import load_config
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.errors import MedsynthError
from medsynth.runs import RunFolder
from medsynth.runs.checkpoint import load_checkpoint
from medsynth.training.init_from import CLASS_ROWS, INPUT_CONV, map_weights, read_parent
from medsynth.training.trainer import train


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished tiny 2D run on one phantom set (80 steps) and a second phantom set to fine-tune on."""
    root = tmp_path_factory.mktemp("parent")
    first = write_phantom_dataset(root / "first", PhantomSpec(dims=2, size=16, cases=30, seed=11), show_progress=False)
    second = write_phantom_dataset(root / "second", PhantomSpec(dims=2, size=16, cases=30, seed=12), show_progress=False)
    train(load_config("tiny_2d.yaml", ["train.max_steps=80", "train.batch_size=8"]), first, root / "run",
          show_progress=False)
    return root


def _losses(run):
    return pd.read_csv(run / "metrics.csv")["loss"].to_numpy()


def test_fine_tuning_starts_from_the_parents_weights_and_loss(parent, tmp_path):
    overrides = ["train.max_steps=10", "train.batch_size=8", f"train.init_from={parent / 'run'}"]
    cfg = load_config("tiny_2d.yaml", overrides)
    start = read_parent(cfg, 1, 0, ["lesion", "normal"], None)
    ema = load_checkpoint(RunFolder(parent / "run").checkpoint)["ema"]
    assert all(torch.equal(start.weights[k], ema[k]) for k in ema) and start.record["fresh_layers"] == []

    train(cfg, parent / "second", tmp_path / "tuned", show_progress=False)
    train(load_config("tiny_2d.yaml", overrides[:2]), parent / "second", tmp_path / "fresh", show_progress=False)
    tuned, fresh, parents_last = _losses(tmp_path / "tuned")[:5].mean(), _losses(tmp_path / "fresh")[:5].mean(), \
        _losses(parent / "run")[-10:].mean()
    assert tuned < 0.8 * fresh                           # it does not start from scratch ...
    assert 0.6 * parents_last < tuned < 1.4 * parents_last   # ... but where the parent ended, within batch noise


def test_the_run_and_everything_downstream_name_both_datasets(parent, tmp_path):
    result = run_cli("train", parent / "second", "--config", "tiny_2d.yaml", "--out", tmp_path / "tuned", "--max-steps",
                     "4", "--init-from", parent / "run")
    assert result.returncode == 0, result.stderr
    assert f"started from {parent / 'run'} (ema weights)" in result.stdout
    record = json.loads((tmp_path / "tuned" / "run.json").read_text())["parent"]
    assert record["run_hash"] == provenance.sha256_file(RunFolder(parent / "run").checkpoint)
    assert load_checkpoint(RunFolder(tmp_path / "tuned").checkpoint)["parent"]["run_hash"] == record["run_hash"]
    for args in (["generate", tmp_path / "tuned", "--out", tmp_path / "syn", "--n", "2"],
                 ["export", tmp_path / "syn", "--out", tmp_path / "export", "--format", "nifti", "--force"]):
        assert run_cli(*args).returncode == 0
    trained_on = json.loads((tmp_path / "syn" / "generate.json").read_text())["trained_on"]
    assert [d["data"] for d in trained_on] == ["second", "first"]
    card = (tmp_path / "export" / "dataset_card.md").read_text()
    assert "trained on `second`" in card and "fine-tuned from a run trained on `first`" in card


def test_an_incompatible_or_unfinished_parent_is_refused_in_one_sentence(parent, tmp_path):
    result = run_cli("train", parent / "second", "--config", "tiny_2d.yaml", "--out", tmp_path / "run", "--init-from",
                     parent / "run", "--set", "model.channels=[8,8]")
    assert_user_error(result, "not compatible", "model.channels")
    train(load_config("tiny_2d.yaml", ["train.max_steps=6"]), parent / "second", tmp_path / "half", stop_at=2,
          show_progress=False)
    result = run_cli("train", parent / "second", "--config", "tiny_2d.yaml", "--out", tmp_path / "run", "--init-from",
                     tmp_path / "half")
    assert_user_error(result, "not finished")
    assert not (tmp_path / "run").exists()


def test_layers_that_do_not_fit_start_fresh_only_when_asked(parent, tmp_path):
    overrides = ["train.max_steps=2", f"train.init_from={parent / 'run'}", "conditioning.mask=true"]
    with pytest.raises(MedsynthError, match=r"input convolution .* 0 mask labels.*init_fresh_layers"):
        train(load_config("tiny_2d.yaml", overrides), parent / "second", tmp_path / "refused", show_progress=False)
    assert not (tmp_path / "refused").exists()
    train(load_config("tiny_2d.yaml", overrides + ["train.init_fresh_layers=true"]), parent / "second",
          tmp_path / "run", show_progress=False)
    tuned = load_checkpoint(RunFolder(tmp_path / "run").checkpoint)
    assert "input convolution" in tuned["parent"]["fresh_layers"][0]
    assert tuned["model"][INPUT_CONV].shape[1] > 1                 # image channel + the new mask channels


def test_class_rows_are_matched_by_name_and_new_classes_start_fresh():
    old = {CLASS_ROWS: torch.arange(9.0).view(3, 3)}                  # classes a, b and the null row
    new = {CLASS_ROWS: torch.full((3, 3), -1.0)}                      # classes b, c and the null row
    rows = map_weights(old, new, ["a", "b"], ["b", "c"], 1)[CLASS_ROWS]
    assert rows[0].tolist() == [3.0, 4.0, 5.0]                        # b keeps its row
    assert rows[1].tolist() == [-1.0, -1.0, -1.0]                     # c is new: fresh
    assert rows[2].tolist() == [6.0, 7.0, 8.0]                        # the null class (guidance) is kept


def test_train_trainable_fine_tunes_only_the_named_layers_privately_and_resumes(parent, tmp_path):
    overrides = ["train.max_steps=4", "train.batch_size=8", f"train.init_from={parent / 'run'}",
                 "train.trainable=['*class_embedding*','*time_emb*']", "train.dp.enabled=true", "train.dp.epsilon=10",
                 "train.dp.intensity_range=[0, 1]"]
    cfg = load_config("tiny_2d.yaml", overrides)
    train(cfg, parent / "second", tmp_path / "tuned", stop_at=2, show_progress=False)
    result = train(cfg, parent / "second", tmp_path / "tuned", resume=True, show_progress=False)
    assert result.finished and "trained" in result.notes[0] and "parameters" in result.notes[0]
    start, tuned = load_checkpoint(RunFolder(parent / "run").checkpoint)["ema"], load_checkpoint(
        RunFolder(tmp_path / "tuned").checkpoint)
    moved = {k for k in start if not torch.equal(start[k], tuned["model"][k])}
    assert moved and all("class_embedding" in k or "time_emb" in k for k in moved)
    record = tuned["parent"]
    assert record["trainable"] == ["*class_embedding*", "*time_emb*"]
    assert 0 < record["trained_parameters"] < record["all_parameters"]
    assert tuned["privacy"]["steps_taken"] == 4


def test_train_trainable_is_refused_without_a_parent_or_when_a_pattern_names_nothing(parent, tmp_path):
    result = run_cli("train", parent / "second", "--config", "tiny_2d.yaml", "--out", tmp_path / "run", "--set",
                     "train.trainable=['*attention*']")
    assert_user_error(result, "train.trainable", "train.init_from")
    result = run_cli("train", parent / "second", "--config", "tiny_2d.yaml", "--out", tmp_path / "run", "--init-from",
                     parent / "run", "--set", "train.trainable=['*decoder_only*']")
    assert_user_error(result, "'*decoder_only*' matches no layer", "net.")
    assert not (tmp_path / "run").exists()
