"""What every stage may use, low in the house: the device to run on, seeded random streams, SIGTERM as Ctrl-C."""

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


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (kill) into KeyboardInterrupt inside the block, so a killed command cleans up as on Ctrl-C."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
