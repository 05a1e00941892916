"""Output directories: never overwrite what searchplay did not write; replace ours only once the new one is complete.

A directory is "ours" when it holds one of the marker files its writer leaves (an index's
metadata, an evaluation's summary, a run's config). Builders write beside the target and swap
it in at the end, so an interrupted build never leaves a half-replaced index behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path


class OutputDirError(ValueError):
    """An output path that would destroy something searchplay did not write."""


RUN_FILES = ("config.toml", "metrics.jsonl", "checkpoints")  # what only a run folder holds
EVAL_FILES = ("summary.json", "eval-settings.json")  # what only an evaluation folder holds


def check_output_dir(path: Path, markers: tuple[str, ...], what: str, others: tuple[str, ...] = ()) -> None:
    """Refuse a path that is a file, a non-empty directory without any of our `markers`, or one holding any of
    `others` (the records of another kind of folder: a run is never an evaluation, nor the reverse)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{path} exists and is not a directory; choose another output path for the {what}")
    if foreign := [name for name in others if (path / name).exists()]:
        raise OutputDirError(
            f"{path} holds {', '.join(foreign)}: it is another kind of folder, not a {what}; choose another output path"
        )
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


WRITER_LOCK = "writer.lock"  # in a run or evaluation folder: held by the one process writing it, holds its pid
LOCK_GRACE_S = 5.0  # a writer that was just killed may take a moment to be gone; a live one is refused after this


def _lock_within(fd: int, seconds: float) -> bool:
    """Take the exclusive lock on `fd`, trying for up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


@contextlib.contextmanager
def single_writer(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder`'s writer lock while the block runs; a second writer is refused with the holder's pid.

    An fcntl lock: the OS releases it when the process ends, however it ends, so a killed run never
    leaves a stale lock behind. Readers (view, report) do not lock. A folder this call created is
    removed again if the block leaves nothing in it but the lock (a run that could not start)."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WRITER_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if not _lock_within(fd, LOCK_GRACE_S):
        pid, _, kind = (os.read(fd, 200).decode(errors="replace").strip() or "unknown").partition(" ")
        os.close(fd)
        raise OutputDirError(
            f"{folder} is being written by another searchplay {kind or what} (pid {pid}); "
            "wait for it to finish or stop it, or choose another folder"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {what}\n".encode())  # the holder's pid and kind, for a refused second writer
        yield
    finally:
        if created and [p.name for p in folder.iterdir()] == [WRITER_LOCK]:
            path.unlink()
            folder.rmdir()
        os.close(fd)


# What makes a folder a run or an evaluation (its writer's records), and which files in one are records
FOLDER_MARKERS = ("config.toml", "metrics.jsonl", "pool.jsonl", "summary.json", "eval-settings.json")
RECORD_SUFFIXES = (".jsonl", ".json", ".toml", ".safetensors", ".bin", ".pt", ".lock", ".partial", ".md", ".jinja", ".gz")
RECORD_FOLDERS = ("trajectories", "checkpoints", "tensorboard")


def _record_folder(path: Path) -> Path | None:
    """The run or evaluation folder that `path` lies in, if any (a checkpoint's model files are 4 levels down)."""
    for folder in path.parents:
        if any((folder / m).is_file() for m in FOLDER_MARKERS):
            return folder
    return None


def check_output_file(path: Path, overwrite: bool, ours: Callable[[Path], bool], what: str) -> None:
    """Before any work: refuse to write `path` when it is a directory, a record of a run or evaluation folder
    (never, even with `overwrite`), or an existing file that `ours` does not recognise as one of our
    `what` files (unless `overwrite`). Every command that writes a single file (report, plot, probe
    build) calls this."""
    path = Path(path)
    if path.is_dir():
        raise OutputDirError(f"--out {path} is a directory; give a file name such as {path / ('out' + path.suffix)}")
    real = path.resolve()  # a link is judged by what it points at: writing follows it
    folder = _record_folder(real)
    if folder is not None:
        inside = real.relative_to(folder)
        if real.suffix in RECORD_SUFFIXES or inside.parts[0] in RECORD_FOLDERS:
            raise OutputDirError(
                f"--out {path} would write over the records of {folder} (a searchplay run or evaluation); "
                "choose a path outside its records"
            )
    if path.exists() and not overwrite and not ours(path):
        raise OutputDirError(
            f"--out {path} exists and is not a {what} written by searchplay; choose another file or pass --overwrite"
        )


def starts_with(marker: bytes, within: int = 4096) -> Callable[[Path], bool]:
    """`ours` for check_output_file: the file holds `marker` in its first `within` bytes."""

    def check(path: Path) -> bool:
        try:
            with open(path, "rb") as f:
                return marker in f.read(within)
        except OSError:
            return False

    return check
