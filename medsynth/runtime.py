"""What every stage may use, low in the house: the device to run on, seeded random streams, stopping on Ctrl-C or
SIGTERM."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from medsynth.errors import MedsynthError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` (a CUDA GPU when there is one), `cpu` or `cuda[:k]`; refuses cuda on a machine without one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MedsynthError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto.")
    if name != "cpu" and not name.startswith("cuda"):
        raise MedsynthError(f"--device must be auto, cpu or cuda, got {name!r}.")
    return torch.device(name)


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU random stream that depends only on `keys` (e.g. (seed, step, rank) or (seed, study, attempt)), so a
    study or a batch is the same draw whatever the batch size, device, shard or resume point."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(keys)).generate_state(1)[0]))


STOP = {"signal": 0}   # the signal that asked this process to stop, 0 when none did


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM (kill) raise KeyboardInterrupt inside the block, so a stopped command cleans up the
    same way either way. Each is also remembered: an interrupt that lands where Python swallows exceptions (an
    object's finaliser or a garbage-collector callback prints "Exception ignored" and carries on) is raised again at
    the next `check_stop()`, which every progress loop calls."""
    def handler(signum, frame):
        STOP["signal"] = signum
        raise KeyboardInterrupt
    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, before in previous.items():
            signal.signal(s, before)
        STOP["signal"] = 0


def check_stop() -> None:
    """Raise KeyboardInterrupt if a stop was asked for inside stop_on_signals (see there)."""
    if STOP["signal"]:
        raise KeyboardInterrupt
