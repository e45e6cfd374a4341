"""Numbers that parse but cannot be meant are refused where they are read; a run that trained no step is never
called finished; resuming a finished run reports its last loss."""

from __future__ import annotations

import pytest

from conftest import assert_user_error, run_cli
from medsynth.config import ConfigError, load_config
from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.runs import RunFolder
from medsynth.runs.checkpoint import load_checkpoint
from medsynth.training.trainer import train


@pytest.mark.parametrize("override, message", [
    ("train.max_minutes=-1", "train.max_minutes (--max-minutes) must be 0 (no limit) or more"),
    ("train.lr=0", "train.lr must be positive"), ("conditioning.class_dropout=1.5", "between 0 and 1"),
    ("train.ema_decay=1", "below 1")])
def test_a_training_config_out_of_range_is_refused(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config("tiny_2d.yaml", [override])


def test_stage_flags_out_of_range_are_refused_before_anything_is_read(tmp_path):
    for args, fragment in ((["generate", tmp_path / "run", "--steps", "0"], "generate.steps (--steps) must be a positive"),
                           (["generate", tmp_path / "run", "--guidance", "-1"], "(--guidance) must be 0 or more"),
                           (["generate", tmp_path / "run", "--qc-attempts", "0"], "(--qc-attempts)"),
                           (["generate", tmp_path / "run", "--guidance-interval", "0.2"],
                            "--guidance-interval must be two noise fractions"),
                           (["generate", tmp_path / "run", "--guidance-interval", "0.85,0.2"],
                            "(--guidance-interval) must be two noise fractions, 0 <= start < end <= 1"),
                           (["export", tmp_path / "syn", "--workers", "0"], "export.workers (--workers)"),
                           (["audit", tmp_path / "run", tmp_path / "syn", "--min-recall", "2"], "(--min-recall)"),
                           (["train", tmp_path / "data", "--config", "tiny_2d.yaml", "--max-minutes", "-1"],
                            "--max-minutes")):
        assert_user_error(run_cli(*args, "--out", tmp_path / "out"), fragment)
    assert not (tmp_path / "out").exists()


def test_zero_trained_steps_is_not_finished_and_a_finished_run_resumes_to_its_last_loss(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from medsynth.training import trainer

    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(dims=2, size=16, cases=8), show_progress=False)
    clock = iter(range(0, 10**9, 1000))                       # every reading 1000 s later: the budget is gone at once
    monkeypatch.setattr(trainer, "time", SimpleNamespace(monotonic=lambda: float(next(clock))))
    none = train(load_config("tiny_2d.yaml", ["train.max_minutes=1"]), data, tmp_path / "run", show_progress=False)
    monkeypatch.undo()
    assert none.step == 0 and not none.finished
    assert not load_checkpoint(RunFolder(tmp_path / "run").checkpoint)["finished"]
    assert_user_error(run_cli("generate", tmp_path / "run", "--out", tmp_path / "syn"), "not finished")
    cfg = load_config("tiny_2d.yaml", ["train.max_steps=6"])
    done = train(cfg, data, tmp_path / "done", show_progress=False)
    again = train(cfg, data, tmp_path / "done", resume=True, show_progress=False)
    assert again.finished and again.step == done.step == 6 and again.loss == pytest.approx(done.loss, rel=1e-3)
