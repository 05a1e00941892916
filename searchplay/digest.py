"""Size and sha256 of every file in a folder, recorded when the folder is written and checked before it is used:
a checkpoint or a built asset damaged in place (zeroed bytes, a truncated file) would otherwise be read silently
into wrong weights, an empty index or a traceback that names neither the file nor the fix."""

from __future__ import annotations

import hashlib
from pathlib import Path

Checksums = dict[str, list[int | str]]  # relative path -> [size in bytes, sha256 hex]


def sha256_file(path: Path) -> str:
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def folder_checksums(folder: Path, leave_out: tuple[str, ...] = ()) -> Checksums:
    """Every file below `folder` but those named in `leave_out` (the record of the checksums itself)."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name not in leave_out)
    return {str(p.relative_to(folder)): [p.stat().st_size, sha256_file(p)] for p in files}


def first_damaged(folder: Path, expected: Checksums) -> tuple[str, str] | None:
    """(file, what is wrong) for the first file that is missing or differs from `expected`; None when all match.
    Sizes are compared first, for every file: a truncated file is found without reading anything."""
    for name, (size, _) in expected.items():
        path = Path(folder) / name
        if not path.is_file():
            return name, "missing"
        if path.stat().st_size != size:
            return name, f"{path.stat().st_size} bytes where {size} were written"
    for name, (_, digest) in expected.items():
        if sha256_file(Path(folder) / name) != digest:
            return name, "its sha256 differs from the one recorded when it was written"
    return None
