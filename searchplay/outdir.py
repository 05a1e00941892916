"""Output directories: never overwrite what searchplay did not write; replace ours only once the new one is complete.

A directory is "ours" when it holds one of the marker files its writer leaves (an index's
metadata, an evaluation's summary, a run's config). Builders write beside the target and swap
it in at the end, so an interrupted build never leaves a half-replaced index behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class OutputDirError(ValueError):
    """An output path that would destroy something searchplay did not write."""


def check_output_dir(path: Path, markers: tuple[str, ...], what: str) -> None:
    """Refuse a path that is a file, or a non-empty directory without any of our `markers`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{path} exists and is not a directory; choose another output path for the {what}")
    if path.is_dir() and any(path.iterdir()) and not any((path / m).exists() for m in markers):
        raise OutputDirError(
            f"{path} is not empty and holds no {what} written by searchplay (no {' or '.join(markers)}); "
            "choose another output path, or empty it yourself"
        )


def replace_dir(new: Path, target: Path) -> None:
    """Put the complete directory `new` at `target`; an old `target` is removed only after the swap."""
    new, target = Path(new), Path(target)
    old = target.with_name(f".{target.name}.replaced-{os.getpid()}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def fsync_tree(path: Path) -> None:
    """Flush every file below `path`, and the directories themselves, to disk (before a rename publishes them)."""
    for p in sorted(Path(path).rglob("*"), reverse=True):
        flags = os.O_RDONLY | (os.O_DIRECTORY if p.is_dir() else 0)
        fd = os.open(p, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
