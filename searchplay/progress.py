"""A progress counter for long loops (index builds, encoding, evaluation), or a silent no-op."""

from __future__ import annotations

import time
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
    console = Console(stderr=True)
    if not console.is_terminal:  # a log file: a plain line now and then instead of a live bar
        yield from _log_lines(console, label, total)
        return
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=total, rate="")

        def advance(n: int = 1) -> None:
            bar.advance(task, n)
            speed = bar.tasks[0].speed
            if speed:
                bar.update(task, rate=f"{speed:,.0f}/s")

        yield advance


def _log_lines(console: Console, label: str, total: int | None, every_s: float = 30.0) -> Iterator[Callable[[int], None]]:
    """advance(n) for output that is not a terminal: one line per `every_s` seconds, and one at the end."""
    t0 = last = time.perf_counter()
    done = 0

    def line() -> None:
        elapsed = time.perf_counter() - t0
        of = f"/{total}" if total is not None else ""
        console.print(f"{label}: {done}{of} after {elapsed:.0f} s", highlight=False)

    def advance(n: int = 1) -> None:
        nonlocal done, last
        done += n
        if time.perf_counter() - last >= every_s:
            last = time.perf_counter()
            line()

    yield advance
    line()
