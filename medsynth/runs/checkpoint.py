"""Checkpoints are data: state dicts, the resolved config, versions, the data fingerprint; loaded with weights_only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medsynth.errors import MedsynthError, first_line
from medsynth.outputs import replace_file


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash or kill mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MedsynthError(f"no checkpoint at {path}; train a model first (medsynth train).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise MedsynthError(f"{path} is not a readable medsynth checkpoint ({first_line(err, 120)}).") from None
