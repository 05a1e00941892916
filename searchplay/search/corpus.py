"""Passages and corpus files.

Three on-disk formats stream into `Passage` objects, one at a time, so that indexing a 21M
passage corpus never holds it in memory:

- Search-R1 wiki-18 jsonl: `{"id": ..., "contents": "\\"Title\\"\\ntext"}`;
- plain jsonl: `{"id": ..., "title": ..., "text": ...}`;
- parquet with either set of fields (read in record batches).

A malformed line raises `CorpusError` naming the file, the line and the problem, unless
`skip_bad_lines` is set, in which case it is skipped and counted in `CorpusStats`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq

from searchplay.jsonl import write_jsonl


class CorpusError(ValueError):
    """A corpus file that cannot be read; the message names file, line and problem."""


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        """The Search-R1 `contents` field: the quoted title on the first line, then the text."""
        return f'"{self.title}"\n{self.text}'

    def to_search_r1(self) -> dict[str, str]:
        return {"id": self.id, "contents": self.contents}


def split_contents(contents: str) -> tuple[str, str]:
    """Inverse of `Passage.contents`; a first line without quotes is taken as the title as is."""
    first, _, rest = contents.partition("\n")
    title = first.strip()
    if len(title) >= 2 and title[0] == '"' and title[-1] == '"':
        title = title[1:-1]
    return title, rest


def passage_from_record(record: Any) -> Passage:
    """A Passage from a dict in either format; ValueError says what is missing."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "id" not in record:
        raise ValueError("missing field 'id'")
    pid = str(record["id"])
    if "contents" in record:
        if not isinstance(record["contents"], str):
            raise ValueError("field 'contents' is not a string")
        title, text = split_contents(record["contents"])
        return Passage(pid, title, text)
    if "text" in record:
        title, text = record.get("title") or "", record["text"]
        if not isinstance(text, str) or not isinstance(title, str):
            raise ValueError("fields 'title'/'text' are not strings")
        return Passage(pid, title, text)
    raise ValueError("needs either 'contents' or 'text' (with optional 'title')")


@dataclass
class CorpusStats:
    passages: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)


def _jsonl_passages(path: Path, skip_bad_lines: bool, stats: CorpusStats) -> Iterator[Passage]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                passage = passage_from_record(json.loads(line))
            except (json.JSONDecodeError, ValueError) as e:
                problem = f"{path}:{lineno}: {e}"
                if not skip_bad_lines:
                    raise CorpusError(f"{problem} (use --skip-bad-lines to skip such lines)") from None
                stats.skipped += 1
                if len(stats.skipped_examples) < 5:
                    stats.skipped_examples.append(problem)
                continue
            stats.passages += 1
            yield passage


def _parquet_passages(path: Path, skip_bad_lines: bool, stats: CorpusStats) -> Iterator[Passage]:
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
        for record in batch.to_pylist():
            row += 1
            try:
                passage = passage_from_record(record)
            except ValueError as e:
                problem = f"{path}: row {row}: {e}"
                if not skip_bad_lines:
                    raise CorpusError(f"{problem} (use --skip-bad-lines to skip such rows)") from None
                stats.skipped += 1
                continue
            stats.passages += 1
            yield passage


def read_passages(path: str | Path, skip_bad_lines: bool = False, stats: CorpusStats | None = None) -> Iterator[Passage]:
    """Stream passages from a jsonl (either schema) or parquet corpus file."""
    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"corpus file {p} does not exist")
    stats = stats if stats is not None else CorpusStats()
    if p.suffix == ".parquet":
        return _parquet_passages(p, skip_bad_lines, stats)
    return _jsonl_passages(p, skip_bad_lines, stats)


def scan_offsets(corpus: Path, skip_bad_lines: bool = False) -> np.ndarray:
    """Byte offsets of the jsonl corpus lines that hold a valid passage (one pass, nothing kept).

    Indexes keep these instead of the texts, and read a hit's passage back with `passages_at`.
    """
    if corpus.suffix == ".parquet":
        raise CorpusError(
            f"{corpus}: an index that reads passages back by byte offset needs a jsonl corpus; "
            "convert the parquet file to jsonl first"
        )
    offsets: list[int] = []
    with open(corpus, "rb") as f:
        pos = 0
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    passage_from_record(json.loads(line))
                    offsets.append(pos)
                except (json.JSONDecodeError, ValueError) as e:
                    if not skip_bad_lines:
                        raise CorpusError(f"{corpus}:{lineno}: {e} (use --skip-bad-lines to skip such lines)") from None
            pos += len(line)
    return np.asarray(offsets, dtype=np.int64)


def passages_at(handle: Any, offsets: np.ndarray) -> list[Passage]:
    """The passages starting at these byte offsets of an open (binary) jsonl corpus."""
    out = []
    for off in offsets:
        handle.seek(int(off))
        out.append(passage_from_record(orjson.loads(handle.readline())))
    return out


def write_search_r1_jsonl(passages: Iterator[Passage] | list[Passage], path: Path) -> int:
    """Write passages in the wiki-18 format (atomically); returns the count."""
    return write_jsonl((p.to_search_r1() for p in passages), path)
