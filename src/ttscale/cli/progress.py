"""One progress bar for every kind of run, fed by :class:`ttscale.run.Progress` events."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ttscale.cli.common import console
from ttscale.run import Progress as RunProgress


class RunBar:
    """A rich bar labelled with what it counts (problems or samples); on problems it shows the
    running accuracy of the problems finished in this invocation."""

    def __init__(self, bar: Progress, description: str) -> None:
        self._bar = bar
        self._description = description
        self._job = bar.add_task(description, total=None, unit="", acc="")
        self._seen = [0, 0]

    def status(self, text: str) -> None:
        """A step before the run starts (loading problems, building an index)."""
        self._bar.update(self._job, description=f"{self._description}: {text}")

    def __call__(self, event: RunProgress) -> None:
        acc = ""
        if event.result is not None and event.result.correct is not None:
            self._seen[0] += 1
            self._seen[1] += int(event.result.correct)
        if event.unit == "problems" and self._seen[0]:
            acc = f"acc {self._seen[1] / self._seen[0]:.2f}"
        self._bar.update(self._job, description=self._description, completed=event.done, total=event.total,
                         unit=event.unit, acc=acc)


@contextmanager
def run_bar(description: str, enabled: bool = True) -> Iterator[RunBar]:
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[unit]}"), TextColumn("{task.fields[acc]}"), TimeElapsedColumn(),
                  TextColumn("left"), TimeRemainingColumn(), console=console, disable=not enabled,
                  transient=False) as bar:
        yield RunBar(bar, description)
