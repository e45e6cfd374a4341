"""Atomic output folders: work happens in a temporary sibling folder that is renamed into place at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from medsynth.errors import Interrupted, MedsynthError, OutputExistsError


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse an existing, non-empty output folder unless overwrite is asked for; return the resolved path."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is a file; choose a folder path for the output.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{out} already exists and is not empty; choose another --out or pass --overwrite to replace it."
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # like `mkdir -p`: runs/hippo works before runs/ exists
    except OSError as err:
        raise MedsynthError(f"cannot create the folder {out.parent} ({err.strerror}); choose another --out.") from None
    return out


def replace_file(path: str | Path, write: Callable[[Path], None]) -> None:
    """`write` makes the file at a temporary path beside `path`, which is then renamed onto `path`: a crash or kill
    mid-write leaves the previous file or the whole new one, never a torn file; the temporary file never stays."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `out`; on success it replaces `out`, on any error it is removed.

    An interrupted run therefore never leaves a half-written folder at `out`, and an existing `out`
    survives until the new one is complete. Ctrl-C (or SIGTERM, which the CLI turns into Ctrl-C) becomes an
    `Interrupted` that says so. The folder gets the modes the umask gives a new folder (not mkdtemp's 0700).
    """
    out = check_output_dir(out, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
    except KeyboardInterrupt:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = "the folder that was there is kept as it was" if out.exists() else "nothing was written there"
        raise Interrupted(f"interrupted before {out} was complete: its unfinished files were removed and {kept}. "
                          "Run the same command again to make it.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o777 & ~current_umask())
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
