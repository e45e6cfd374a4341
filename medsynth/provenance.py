"""Provenance shared by every artefact: versions, content hashes, and the JSON record written beside outputs."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from medsynth.outputs import replace_file

_PACKAGES = ("medsynth", "torch", "monai", "numpy", "nibabel", "pydicom", "highdicom", "pandas")
_COMMAND = {"line": "(Python API)"}   # what made the artefacts of this process; the CLI sets its command line


def set_command(argv: list[str]) -> None:
    """Record `medsynth ARGS` as the command every artefact of this process was made by (the CLI calls this)."""
    _COMMAND["line"] = " ".join(["medsynth", *argv])


def command() -> str:
    return _COMMAND["line"]


def command_without_paths() -> str:
    """The command with every path in it cut to its last part: what a file that leaves the institution may say."""
    return " ".join(Path(word).name if "/" in word or "\\" in word else word for word in command().split(" "))


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return tuple(found.items())


def versions() -> dict[str, str]:
    """Versions of Python and of the packages whose behaviour shapes an artefact (looked up once per process)."""
    return dict(_versions())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(kind: str, config: dict[str, Any], inputs: dict[str, Any] | None = None, timestamp: bool = True,
           local_paths: bool = True, **extra: Any) -> dict[str, Any]:
    """The provenance record every artefact carries: what it is, the resolved config, versions, inputs' hashes.

    `timestamp=False` leaves out the creation time, for artefacts that must be byte-identical when remade by the same
    command; every record names the command that made it (`medsynth ...`, or "(Python API)"); `local_paths=False`
    cuts the paths in it to their names (records that are exported).
    """
    return {
        "artefact": kind,
        **({"created": datetime.now(timezone.utc).isoformat(timespec="seconds")} if timestamp else {}),
        "command": command() if local_paths else command_without_paths(),
        "config": config,
        "inputs": inputs or {},
        "versions": versions(),
        **extra,
    }


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically: the payload is serialised first, written beside `path` and renamed onto it, so a crash or
    kill leaves either the previous file or the whole new one, never a torn file that a rerun would take as done."""
    text = json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n"
    replace_file(path, lambda tmp: tmp.write_text(text))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
