"""JSON-lines files: atomic whole-file writes and plain reads; a finished record may be stored gzipped."""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def finite_json(value: Any) -> Any:
    """A metric value as strict JSON: a non-finite float as the string "nan", "inf" or "-inf" (JSON has no such
    numbers; Python would write NaN, which strict parsers refuse), anything else as it is. Readers show those
    strings as gaps in a curve."""
    if not isinstance(value, float) or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"


GZ = ".gz"


def stored(path: Path) -> Path:
    """`path`, or `path.gz` where only the compressed copy exists. Finished study records (trajectories, predictions)
    are committed gzipped, since the repository travels whole to a GPU check of at most 64 MiB; every reader of
    such a record takes either."""
    path = Path(path)
    packed = path.with_name(path.name + GZ)
    return packed if not path.exists() and packed.is_file() else path


def read_record_bytes(path: Path) -> bytes:
    """The content of `path` or of its gzipped copy (see `stored`), decompressed."""
    found = stored(path)
    return gzip.decompress(found.read_bytes()) if found.name.endswith(GZ) else found.read_bytes()


def gzip_record(path: Path) -> Path:
    """Replace a finished record by its gzipped copy `path.gz` (level 9, no timestamp: the same bytes every time),
    checked to decompress to the same content before the plain file goes; returns the new path."""
    path = Path(path)
    data = path.read_bytes()
    packed = path.with_name(path.name + GZ)
    atomic_write(packed, gzip.compress(data, 9, mtime=0))
    if gzip.decompress(packed.read_bytes()) != data:
        raise OSError(f"{packed} does not decompress to {path}; {path} was kept")
    path.unlink()
    return packed


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> int:
    """Write to `path.tmp`, then rename, so a reader never sees half a file; returns the count."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def atomic_write(path: Path, data: bytes) -> None:
    """Replace a file's content all at once: written beside, fsynced, renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records, one line each, in one write, fsynced: a crash tears at most the last line. A file whose last
    record lacks only its newline (a kill between the two, or an editor) gets it first, so that two records never
    merge into one line."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class DamagedLineError(ValueError):
    """A damaged line before the end of an append-only file, where only the last line may be torn by a kill."""

    def __init__(self, path: Path, line: int, reason: str, following: int):
        self.path, self.line, self.reason, self.following = path, line, reason, following
        super().__init__(f"{path}, line {line}: damaged ({reason})")


def read_appended(path: Path, problem: Callable[[Any], str | None] = lambda record: None) -> tuple[list[Any], int]:
    """The records of an append-only JSON-lines file and the byte length of its good part. Only a last line
    without its newline (torn by a kill while it was written) is left out; a damaged line anywhere else
    raises DamagedLineError, since cutting the file there would delete the good lines after it.
    `problem(record)` names what is wrong with a parsed record's shape, or returns None."""
    raw = path.read_bytes()
    lines = raw.splitlines(keepends=True)
    records, good = [], 0
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            if (reason := problem(record)) is not None:
                raise ValueError(reason)
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            if i == len(lines) - 1 and not line.endswith(b"\n"):
                break
            raise DamagedLineError(path, i + 1, str(e), len(lines) - i - 1) from None
        records.append(record)
        good += len(line)
    return records, good


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of `path` (or of its gzipped copy). Lines end at "\n" only: str.splitlines would also cut at the
    Unicode line and paragraph separators that QA texts hold inside their strings."""
    return [json.loads(line) for line in read_record_bytes(path).split(b"\n") if line.strip()]


def parse_jsonl(path: Path, parse: Callable[[Any, int], T], error: type[Exception]) -> list[T]:
    """Parse each non-empty line with `parse(record, index)`; a bad line raises `error` naming file and line."""
    out: list[T] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(parse(json.loads(line), len(out)))
            except (json.JSONDecodeError, ValueError) as e:
                raise error(f"{path}:{lineno}: {e}") from None
    return out


def random_state(value: Any) -> tuple[Any, ...]:
    """A `random.Random` state read back from JSON (where its tuples became lists)."""
    return (value[0], tuple(value[1]), value[2])
