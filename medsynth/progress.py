"""Progress bars for long loops (rich), silent when disabled or when output is not a terminal."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, Sequence, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")


def progress_iter(items: Sequence[T], description: str, enabled: bool = True) -> Iterator[T]:
    """Iterate over `items` with a progress bar on stderr."""
    if not enabled or len(items) < 2:
        yield from items
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    from rich.console import Console

    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty()) as bar:
        yield from bar.track(items, description=description)
