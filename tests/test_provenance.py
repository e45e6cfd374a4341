"""The JSON records beside every artefact: a rerun trusts a finished file, so a crash must never leave a torn one."""

import json
from pathlib import Path

import numpy as np
import pytest

from medsynth import provenance


def test_a_record_is_written_whole_and_replaces_the_old_one(tmp_path):
    path = tmp_path / "result.json"
    provenance.write_json(path, {"old": 1})
    provenance.write_json(path, {"lift": np.float32(0.5), "where": Path("a/b"), "seeds": np.arange(3)})
    assert json.loads(path.read_text()) == {"lift": 0.5, "where": "a/b", "seeds": [0, 1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_crash_mid_write_keeps_the_previous_record_and_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    provenance.write_json(path, {"finished": True})
    real_write = Path.write_text

    def torn(self, text, *args, **kwargs):
        real_write(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(OSError, match="disk full"):
        provenance.write_json(path, {"finished": False, "padding": "x" * 100})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"finished": True}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_value_json_cannot_hold_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "result.json"
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        provenance.write_json(path, {"bad": object()})
    assert not list(tmp_path.iterdir())
