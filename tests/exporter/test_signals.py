"""SIGTERM and Ctrl-C in a long command: workers end, the partial folder goes, one sentence says what was kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_export import make_synthetic_set


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(p) for p in text.split()]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_during_export_ends_the_workers_and_leaves_no_partial_folder(tmp_path):
    synth = make_synthetic_set(tmp_path / "synth", n=24, shape=(40, 40, 40))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "medsynth", "export", str(synth), "--out", str(out), "--format", "dicom",
               "--force", "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline, workers = time.monotonic() + 120, []
    while time.monotonic() < deadline and process.poll() is None:
        partial = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
        workers = children(process.pid)
        if partial and len(workers) >= 2 and list(partial[0].rglob("*.dcm")):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the export finished before it could be stopped; make the set larger"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    message = stderr.strip().splitlines()
    assert len(message) == 1 and "interrupted before" in message[0] and "Run the same command again" in message[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    time.sleep(0.5)
    assert workers and not [pid for pid in workers if alive(pid)]


def test_a_full_disk_during_export_gives_one_sentence_and_leaves_nothing(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(small)], capture_output=True).returncode:
        import pytest

        pytest.skip("needs to mount a small tmpfs (root) to fill a disk")
    try:
        synth = make_synthetic_set(tmp_path / "synth", n=6, shape=(40, 40, 40))
        for formats in (["--format", "nifti"], ["--format", "dicom"]):
            result = subprocess.run([sys.executable, "-m", "medsynth", "export", str(synth), "--out", str(small / "out"),
                                     *formats, "--force", "--workers", "1"], capture_output=True, text=True)
            assert result.returncode == 2, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and "No space left on device" in lines[0] and "free some space" in lines[0], lines
            assert "Traceback" not in result.stderr and list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
