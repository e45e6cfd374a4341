"""Long commands say how far they are when their output goes to a log file, not only on a terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from medsynth.data.phantom import PhantomSpec, write_phantom_dataset
from medsynth.progress import progress_iter
from medsynth.runtime import STOP, stop_on_signals


def logged(*args, seconds: str = "0") -> subprocess.CompletedProcess:
    """A command run as `medsynth ... > log 2>&1` would be: no terminal, progress every `seconds`."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MEDSYNTH_PROGRESS_SECONDS": seconds}
    return subprocess.run([sys.executable, "-m", "medsynth", *map(str, args)], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=300)


def test_train_and_generate_print_progress_lines_into_a_log(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(dims=2, size=16, cases=12), show_progress=False)
    result = logged("train", data, "--config", "tiny_2d.yaml", "--out", tmp_path / "run", "--set", "train.max_steps=12")
    assert result.returncode == 0, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith("train: ")]
    assert any("train: 6/12 (50%)" in l and "loss" in l and "left" in l for l in lines), result.stderr
    assert lines[-1].startswith("train: 12/12 (100%)") and "in all" in lines[-1]
    result = logged("generate", tmp_path / "run", "--out", tmp_path / "syn", "--n", "12", "--batch-size", "4",
                    "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert "generating: 3/3 (100%)" in result.stderr
    quiet = logged("generate", tmp_path / "run", "--out", tmp_path / "syn2", "--n", "4", seconds="30")
    assert quiet.returncode == 0 and quiet.stderr.strip() == ""        # a short loop prints nothing



@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_that_python_swallows_still_stops_at_the_next_progress_step():
    class Finaliser:
        def __del__(self):        # Ctrl-C lands in a finaliser: Python prints "Exception ignored" and carries on
            os.kill(os.getpid(), signal.SIGINT)

    seen, before = [], signal.getsignal(signal.SIGINT)   # SIG_IGN when the tests run in a background job
    with pytest.raises(KeyboardInterrupt), stop_on_signals():
        for k in progress_iter(range(5), "work", enabled=False):
            seen.append(k)
            if k == 1:
                Finaliser()           # dropped at once: its interrupt is swallowed, the loop goes on to its next step
    assert seen == [0, 1]
    assert STOP["signal"] == 0 and signal.getsignal(signal.SIGINT) is before   # the handler in place before is back
