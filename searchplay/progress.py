"""A progress counter for long loops (index builds, encoding, evaluation), or a silent no-op."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn


def _ignore(n: int = 1) -> None:
    """The advance() of a disabled progress counter."""


@contextmanager
def progress(enabled: bool, label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; shows count, total (when known), rate and elapsed time on stderr."""
    if not enabled:
        yield _ignore
        return
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, rate="")

        def advance(n: int = 1) -> None:
            bar.advance(task, n)
            speed = bar.tasks[0].speed
            if speed:
                bar.update(task, rate=f"{speed:,.0f}/s")

        yield advance
