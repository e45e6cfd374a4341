"""Progress for long loops: a rich bar on a terminal; plain lines on stderr when the output goes to a log file.

A loop that runs longer than `MEDSYNTH_PROGRESS_SECONDS` (default 30) prints a line every that many seconds and one
at the end, each with the count done, the rate and the time left, so `medsynth train ... > train.log 2>&1` shows how
far a run has come; a short loop prints nothing (an error then stays one sentence).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from medsynth.runtime import check_stop

T = TypeVar("T")


def interval() -> float:
    """Seconds between plain progress lines (MEDSYNTH_PROGRESS_SECONDS; 0 prints every update)."""
    try:
        return max(0.0, float(os.environ.get("MEDSYNTH_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class LogLines:
    """Plain progress lines for a loop of `total` steps: '<what>: 40/200 (20%), 3.10 items/s, 0:52 left'."""

    def __init__(self, what: str, total: int, start: int = 0, unit: str = "items") -> None:
        self.what, self.total, self.start_step, self.unit = what, total, start, unit
        self.began = self.last = time.monotonic()
        self.done, self.printed = start, False

    @staticmethod
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def update(self, done: int, extra: str = "") -> None:
        self.done = done
        now = time.monotonic()
        if now - self.last >= interval() and done < self.total:
            self.last, self.printed = now, True
            self.say(self.line(done, extra))

    def line(self, done: int, extra: str = "") -> str:
        elapsed = time.monotonic() - self.began
        rate = (done - self.start_step) / elapsed if elapsed > 0 else 0.0
        left = f", {_clock((self.total - done) / rate)} left" if rate > 0 and done < self.total else ""
        return (f"{self.what}: {done}/{self.total} ({100 * done / max(self.total, 1):.0f}%)"
                + (f", {extra}" if extra else "") + f", {rate:.2f} {self.unit}/s{left}")

    def close(self, extra: str = "") -> None:
        """The closing line, for a loop that printed along the way or ran longer than the interval."""
        elapsed = time.monotonic() - self.began
        if self.printed or elapsed >= interval():
            self.say(self.line(self.done, extra) + f", {_clock(elapsed)} in all")


def progress_iter(items: Iterable[T], description: str, enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """Iterate over `items` (a sequence, or any iterable with `total` given) with a progress bar on a terminal, or
    plain lines on stderr otherwise; a stop asked for (runtime.check_stop) ends it before the next item."""
    total = len(items) if total is None else total
    if not enabled or total < 2:
        yield from stoppable(items)
        return
    if not sys.stderr.isatty():
        lines = LogLines(description, total)
        for k, item in enumerate(stoppable(items)):
            yield item
            lines.update(k + 1)
        lines.close()
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield from stoppable(bar.track(items, total=total, description=description))


def stoppable(items: Iterable[T]) -> Iterator[T]:
    """`items`, checking before each one whether a stop was asked for."""
    for item in items:
        check_stop()
        yield item


class StepBar:
    """Training progress: step counter, loss and samples/s; a bar on a terminal, plain lines in a log file."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, what: str = "train") -> None:
        self.lines = LogLines(what, total, start, "steps") if enabled and not sys.stderr.isatty() else None
        self.progress = Progress(
            TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.1f} samples/s"), TimeRemainingColumn(),
            console=Console(stderr=True), disable=not (enabled and sys.stderr.isatty()))
        self.task = self.progress.add_task(what, total=total, completed=start, loss=float("nan"), rate=0.0)
        self.loss, self.rate = float("nan"), 0.0
        self.progress.start()

    def update(self, step: int, loss: float, rate: float) -> None:
        check_stop()
        self.loss, self.rate = loss, rate
        self.progress.update(self.task, completed=step, loss=loss, rate=rate)
        if self.lines is not None:
            self.lines.update(step, self.extra())

    def extra(self) -> str:
        return f"loss {self.loss:.4f}, {self.rate:.1f} samples/s"

    def close(self) -> None:
        self.progress.stop()
        if self.lines is not None and self.lines.done > self.lines.start_step:
            self.lines.close(self.extra())


def stage(line: str, enabled: bool = True) -> None:
    """A line that says which stage of a long command has begun (stderr, terminal or log alike)."""
    if enabled:
        print(line, file=sys.stderr, flush=True)
