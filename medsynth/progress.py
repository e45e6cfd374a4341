"""Progress bars for long loops (rich), silent when disabled or when output is not a terminal."""

from __future__ import annotations

import sys
from typing import Iterator, Sequence, TypeVar

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


class StepBar:
    """A training progress bar: step counter, loss and samples/s, on stderr when it is a terminal."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True) -> None:
        from rich.console import Console
        from rich.progress import TextColumn

        self.progress = Progress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.1f} samples/s"), TimeRemainingColumn(),
            console=Console(stderr=True), disable=not (enabled and sys.stderr.isatty()))
        self.task = self.progress.add_task("train", total=total, completed=start, loss=float("nan"), rate=0.0)
        self.progress.start()

    def update(self, step: int, loss: float, rate: float) -> None:
        self.progress.update(self.task, completed=step, loss=loss, rate=rate)

    def close(self) -> None:
        self.progress.stop()
